"""`earmark serve`: every endpoint, every kind of bad input, the limits, and a real server under load.

One tiny tone classifier is trained once for the module; the app is exercised through FastAPI's
TestClient, and once through a real `python -m earmark serve` process with concurrent clients.
"""

import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.errors import EarmarkError
from earmark.serve.app import ModelService, create_app, load_model
from earmark.serve.audio import (
    LONG_DECODE_SAMPLES,
    AudioRequest,
    DecodeSlots,
    RequestError,
    ServeLimits,
    decode_encoded,
)

RATE_HZ = 8000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = base / "tones"
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(10):
            sf.write(root / label / f"{label}_{take}.wav", tone_clip(frequency, RATE_HZ, 0.5, class_index * 100 + take),
                     RATE_HZ)
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
                 f"data.sample_rate_hz={RATE_HZ}", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.2", "features.n_fft=256",
                 "features.n_mels=32", "model.params.width=4", "train.max_epochs=8", "train.batch_size=8",
                 "train.lr=0.01", "train.scheduler=none", "augment.enabled=false", "train.progress=false",
                 "name=tones"]
    return api.train(None, overrides).run_dir


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load_model(run_dir, threads=1)


@pytest.fixture(scope="module")
def client(predictor, run_dir):
    from fastapi.testclient import TestClient

    app = create_app(predictor, ServeLimits(max_upload_bytes=2**20, max_duration_s=30.0, max_windows=100),
                     model_name="tones", model_path=str(run_dir))
    with TestClient(app) as test_client:  # raises on any unhandled server error, so a 500 fails the test
        yield test_client


def encoded(wave: np.ndarray, rate_hz: int = RATE_HZ, format: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate_hz, format=format, subtype=subtype)
    return buffer.getvalue()


def tone(label: str, duration_s: float = 0.5, rate_hz: int = RATE_HZ, seed: int = 7) -> np.ndarray:
    """A tone like the training clips (made at the model's rate, so with the same noise floor), then
    resampled to `rate_hz`: the tiny model keys on that noise floor as much as on the pitch."""
    from earmark.data.audio import resample

    return resample(tone_clip(TONES_HZ[label], RATE_HZ, duration_s, seed), RATE_HZ, rate_hz)


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in response.text
    for word in words:
        assert word in (body["error"] + str(body["detail"])), body
    return body


def test_health_and_labels_describe_the_model(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tones" and health["backend"] == "torch"
    assert (health["sample_rate_hz"], health["clip_s"], health["n_labels"]) == (RATE_HZ, 0.5, 3)
    assert health["uptime_s"] >= 0 and health["limits"]["max_upload_bytes"] == 2**20
    assert client.get("/labels").json()["labels"] == ["high", "low", "mid"]


def test_predict_matches_earmark_predict_on_the_same_file(client, run_dir, tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, tone("low"), RATE_HZ)
    expected = api.predict(run_dir, [path], top_k=3).files.iloc[0]
    with open(path, "rb") as handle:
        body = client.post("/predict?top_k=2", files={"file": ("low.wav", handle, "audio/wav")}).json()
    assert body["label"] == expected["label"] == "low"
    assert body["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    assert [row["label"] for row in body["top_k"]] == [expected["label"], expected["top2_label"]]
    assert body["duration_s"] == pytest.approx(0.5) and body["sample_rate_hz"] == RATE_HZ
    assert body["n_windows"] == 1 and body["rejected"] is False


@pytest.mark.parametrize("format,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", None),
                                            ("MP3", None)])
def test_every_encoded_format_is_decoded_mixed_and_resampled(client, format, subtype):
    wave = tone("high", rate_hz=44100)
    stereo = np.stack([wave, 0.5 * wave], axis=1)  # (n, 2)
    response = client.post("/predict", files={"file": ("clip", encoded(stereo, 44100, format, subtype))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "high" and body["sample_rate_hz"] == 44100 and body["channels"] == 2
    assert body["duration_s"] == pytest.approx(0.5, abs=0.05)


def test_raw_pcm_and_bare_file_bodies_give_the_file_upload_answer(client):
    wave = tone("mid", rate_hz=16000)
    as_file = client.post("/predict", files={"file": ("mid.wav", encoded(wave, 16000, subtype="FLOAT"))}).json()
    f32 = client.post("/predict?rate_hz=16000&format=f32le", content=wave.astype("<f4").tobytes(),
                      headers={"Content-Type": "application/octet-stream"}).json()
    s16 = client.post("/predict?rate_hz=16000", content=(wave * 32767).astype("<i2").tobytes(),
                      headers={"Content-Type": "application/octet-stream"}).json()
    bare = client.post("/predict", content=encoded(wave, 16000, subtype="FLOAT"),
                       headers={"Content-Type": "audio/wav"}).json()
    assert as_file["label"] == f32["label"] == s16["label"] == bare["label"] == "mid"
    assert f32["probability"] == pytest.approx(as_file["probability"], abs=1e-5)
    assert bare["probability"] == pytest.approx(as_file["probability"], abs=1e-5)
    assert s16["probability"] == pytest.approx(as_file["probability"], abs=1e-2)
    stereo = np.stack([wave, wave], axis=1).astype("<f4").tobytes()  # interleaved frames
    two = client.post("/predict?rate_hz=16000&format=f32le&channels=2", content=stereo,
                      headers={"Content-Type": "application/octet-stream"}).json()
    assert two["channels"] == 2 and two["probability"] == pytest.approx(as_file["probability"], abs=1e-5)


def test_timeline_windows_follow_the_audio_and_aggregate(client):
    audio = encoded(np.concatenate([tone("low", 1.5), tone("high", 1.5, seed=9)]))
    body = client.post("/predict/timeline", files={"file": ("both.wav", audio)}).json()
    assert (body["chunk_s"], body["hop_s"], body["n_windows"]) == (0.5, 0.5, 6)  # the model's clip by default
    assert [row["label"] for row in body["windows"]] == ["low"] * 3 + ["high"] * 3
    assert [(row["start_s"], row["end_s"]) for row in body["windows"][:2]] == [(0.0, 0.5), (0.5, 1.0)]
    assert body["label"] in ("low", "high") and len(body["top_k"]) == 3
    overlapping = client.post("/predict/timeline?chunk_s=0.5&hop_s=0.2", files={"file": ("both.wav", audio)}).json()
    # 13 full windows (the last at 2.4 s), then the partial one at 2.6 s (it holds 0.4 s, at least half a window)
    assert overlapping["n_windows"] == 14 and overlapping["windows"][-1] == {**overlapping["windows"][-1],
                                                                             "start_s": 2.6, "end_s": 3.0}
    # a window longer than the model's clip would go partly unheard: refused, naming the limit
    assert_error(client.post("/predict/timeline?chunk_s=1.0", files={"file": ("both.wav", audio)}), 422,
                 "chunk_s", "0.5 s")


def wav_with_rate(rate_hz: int) -> bytes:
    """A valid WAV whose header claims `rate_hz` (the byte rate is patched to match)."""
    data = bytearray(encoded(tone("low"), subtype="PCM_16"))
    data[24:28] = rate_hz.to_bytes(4, "little")
    data[28:32] = (rate_hz * 2).to_bytes(4, "little")
    return bytes(data)


OCTET = {"Content-Type": "application/octet-stream"}
BAD_REQUESTS = {  # name: (method kwargs, status, words in the error)
    "garbage bytes": (dict(files={"file": ("x.wav", os.urandom(4000))}), 415, ["cannot decode"]),
    "empty upload": (dict(files={"file": ("x.wav", b"")}), 400, ["empty"]),
    "empty body": (dict(content=b"", headers=OCTET), 400, ["empty"]),
    "missing file field": (dict(files={"audio": ("x.wav", encoded(tone("low")))}), 400, ["file"]),
    "form without a file": (dict(files={"note": (None, "hello")}), 400, ["file"]),
    "broken multipart": (dict(content=b"--nope\r\ngarbage",
                              headers={"Content-Type": "multipart/form-data; boundary=x"}), 400, []),
    "urlencoded form": (dict(data={"note": "hello"}), 415, ["Content-Type"]),
    "unsupported content type": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, ["Content-Type"]),
    "rate 0": (dict(params={"rate_hz": 0}, content=b"\0" * 800, headers=OCTET), 422, ["sample rate"]),
    "negative rate": (dict(params={"rate_hz": -16000}, content=b"\0" * 800, headers=OCTET), 422, ["sample rate"]),
    "10 MHz rate": (dict(params={"rate_hz": 10_000_000}, content=b"\0" * 800, headers=OCTET), 422, ["sample rate"]),
    "rate not a number": (dict(params={"rate_hz": "fast"}, content=b"\0" * 800, headers=OCTET), 422, ["rate_hz"]),
    "file claiming 10 MHz": (dict(files={"file": ("x.wav", wav_with_rate(10_000_000))}), 422, ["sample rate"]),
    "pcm format unknown": (dict(params={"rate_hz": 8000, "format": "u8"}, content=b"\0" * 800, headers=OCTET), 422,
                           ["s16le"]),
    "pcm without rate": (dict(params={"format": "s16le"}, content=b"\0" * 800, headers=OCTET), 422, ["rate_hz"]),
    "pcm channels 0": (dict(params={"rate_hz": 8000, "channels": 0}, content=b"\0" * 800, headers=OCTET), 422,
                       ["channel"]),
    "truncated pcm": (dict(params={"rate_hz": 8000}, content=b"\0" * 801, headers=OCTET), 400, ["multiple"]),
    "NaN pcm": (dict(params={"rate_hz": 8000, "format": "f32le"},
                     content=np.full(4000, np.nan, dtype="<f4").tobytes(), headers=OCTET), 400, ["NaN"]),
    "oversize upload": (dict(files={"file": ("x.wav", b"\0" * (2**20 + 10))}), 413, ["too large"]),
    "too long audio": (dict(files={"file": ("x.wav", encoded(np.zeros(RATE_HZ * 31, np.float32)))}), 413,
                       ["too long", "30"]),
    "top_k 0": (dict(params={"top_k": 0}, files={"file": ("x.wav", encoded(tone("low")))}), 422, ["top_k"]),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx_and_the_server_stays_up(client, name):
    kwargs, status, words = BAD_REQUESTS[name]
    assert_error(client.post("/predict", **kwargs), status, *words)
    assert client.get("/health").status_code == 200


def test_bad_timeline_requests_and_unknown_routes(client):
    audio = {"file": ("x.wav", encoded(tone("low", 2.0)))}
    assert_error(client.post("/predict/timeline?chunk_s=-1", files=audio), 422, "chunk_s")
    assert_error(client.post("/predict/timeline?chunk_s=0.5&hop_s=0.01", files=audio), 422, "too many windows")
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.get("/predict"), 405)


def test_a_streamed_body_is_cut_off_at_the_cap(client):
    def chunks():  # no Content-Length: the cap must be enforced while reading
        for _ in range(40):
            yield b"\0" * 65536

    response = client.post("/predict?rate_hz=8000", content=chunks(), headers=OCTET)
    assert "content-length" not in {key.lower() for key in response.request.headers}
    assert_error(response, 413, "too large")


class SlowPredictor:
    """The real predictor, `delay_s` slower, optionally with a reject threshold."""

    def __init__(self, inner, delay_s: float = 0.0, reject_threshold: float = 0.0):
        self.inner, self.delay_s, self.reject_threshold = inner, delay_s, reject_threshold
        self.labels, self.contract = inner.labels, inner.contract
        self.calls = 0

    def predict_waves(self, waves):
        self.calls += 1
        time.sleep(self.delay_s)
        return self.inner.predict_waves(waves)


def test_a_slow_request_times_out_with_504_and_a_busy_server_answers_503(predictor):
    from fastapi.testclient import TestClient

    limits = ServeLimits(request_timeout_s=0.5, max_pending=1)
    slow_predictor = SlowPredictor(predictor, delay_s=2.0)  # wide margins: two busy cores stretch every step
    app = create_app(slow_predictor, limits, model_name="slow")
    audio = {"file": ("x.wav", encoded(tone("low")))}
    with TestClient(app) as slow:
        started = time.monotonic()
        assert_error(slow.post("/predict", files=audio), 504, "timed out")
        assert time.monotonic() - started < 1.8  # answered at the timeout, not when the work ends
        # the abandoned work still runs (2 s) and holds the only place: a new request is refused
        assert_error(slow.post("/predict", files=audio), 503, "busy")
        time.sleep(2.5)  # the abandoned work has finished and given its place back
        statuses = []
        first = threading.Thread(target=lambda: statuses.append(slow.post("/predict", files=audio).status_code))
        first.start()
        time.sleep(0.4)
        busy = slow.post("/predict", files=audio)
        first.join()
        assert_error(busy, 503, "busy")
        assert statuses == [504] and slow.get("/health").status_code == 200


def test_long_work_stops_at_the_deadline_between_window_batches(predictor):
    from fastapi.testclient import TestClient

    slow_predictor = SlowPredictor(predictor, delay_s=0.2)
    app = create_app(slow_predictor, ServeLimits(request_timeout_s=0.3), model_name="slow")
    audio = {"file": ("long.wav", encoded(tone("low", 160.0)))}  # 320 windows: 5 batches of 64
    with TestClient(app) as slow:
        assert_error(slow.post("/predict/timeline", files=audio), 504, "timed out")
        time.sleep(1.0)
    # each batch takes 0.2 s: by the third at the latest the 0.3 s deadline has passed and the work stops,
    # where without the check all 5 batches would run
    assert 1 <= slow_predictor.calls <= 3


def test_a_low_top_probability_is_labelled_unknown(predictor):
    from fastapi.testclient import TestClient

    app = create_app(SlowPredictor(predictor, reject_threshold=1.01), model_name="strict")
    with TestClient(app) as strict:
        body = strict.post("/predict", files={"file": ("x.wav", encoded(tone("low")))}).json()
        windows = strict.post("/predict/timeline", files={"file": ("x.wav", encoded(tone("low", 1.0)))}).json()
    assert body["label"] == "unknown" and body["rejected"] is True and body["top_k"][0]["label"] == "low"
    assert {row["label"] for row in windows["windows"]} == {"unknown"}


def test_limits_and_missing_models_are_checked_up_front(tmp_path):
    with pytest.raises(EarmarkError, match="max_duration_s"):
        ServeLimits(max_duration_s=0)
    with pytest.raises(EarmarkError, match="max-upload-mb"):
        ServeLimits.from_options(max_upload_mb=-1)
    with pytest.raises(EarmarkError, match="model not found"):
        api.create_app(tmp_path / "nothing")


def test_the_cli_refuses_a_missing_model_and_a_busy_port(tmp_path, run_dir):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "earmark", "serve", *args], capture_output=True, text=True,
                              timeout=120)

    missing = serve(str(tmp_path / "nothing"), "--port", "1")
    assert missing.returncode == 2 and "model not found" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = serve(str(run_dir), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "cannot listen" in busy.stderr and "Traceback" not in busy.stderr


def test_an_exported_onnx_model_is_served_like_its_run(run_dir, client, tmp_path):
    from fastapi.testclient import TestClient

    onnx_path = api.export(run_dir, tmp_path / "export", log=lambda *_: None).model_path
    assert onnx_path is not None and onnx_path.suffix == ".onnx"
    audio = {"file": ("x.wav", encoded(tone("mid")))}
    with TestClient(api.create_app(onnx_path)) as onnx_client:
        health = onnx_client.get("/health").json()
        served = onnx_client.post("/predict", files=audio).json()
    torch_served = client.post("/predict", files=audio).json()
    assert health["backend"] == "onnx" and health["n_labels"] == 3 and health["model"] == "export/model.onnx"
    assert served["label"] == torch_served["label"]
    assert served["probability"] == pytest.approx(torch_served["probability"], abs=1e-4)  # the export's parity bound


def test_a_real_server_process_answers_concurrent_clients_without_errors(run_dir):
    import httpx

    from earmark.serve.client import run_load, server_process

    audio = encoded(tone("low"))
    with server_process(run_dir, options=["--threads", "1", "--max-upload-mb", "1"]) as url:
        report = run_load(url, audio, n_requests=200, concurrency=8)
        print(f"\nreal server, 200 requests from 8 threads: {report.summary()}")
        assert report.errors == [] and len(report.latencies_s) == 200
        garbage = httpx.post(f"{url}/predict", files={"file": ("x.wav", b"not audio" * 100)})
        oversize = httpx.post(f"{url}/predict", files={"file": ("x.wav", b"\0" * (2**20 + 1))})
        assert_error(garbage, 415) and assert_error(oversize, 413)
        assert httpx.get(f"{url}/health").json()["model"] == "tones"


ATTACK_S = 3.5  # the slow-client attack below lasts at most this long


def slow_clients(host: str, port: int, n_uploads: int, n_headers: int):
    """Sockets that send a request line (and, for uploads, all headers of a 100 kB body), then one byte
    per socket every 0.25 s: uploads that would hold every in-flight slot, headers that never end."""
    uploads, headers = [], []
    for group, n, opening in ((uploads, n_uploads, b"Content-Type: application/octet-stream\r\n"
                                                   b"Content-Length: 100000\r\n\r\n"), (headers, n_headers, b"")):
        for _ in range(n):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + opening)
            group.append(sock)
    stop = threading.Event()

    def dribble() -> None:
        ends = time.monotonic() + ATTACK_S
        while not stop.is_set() and time.monotonic() < ends:
            for sock in uploads + headers:
                try:
                    sock.send(b"x")
                except OSError:
                    pass
            time.sleep(0.25)

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    return uploads, headers, stop, thread


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):  # a 408 response first, for an upload
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_slow_clients_and_compressed_long_audio_do_not_starve_good_requests(run_dir):
    import httpx

    from earmark.serve.client import server_process

    good = encoded(tone("low"))
    silence_s, silence_rate_hz = 30.0, 96_000  # 2.9 M samples in a few kB of FLAC: over --max-samples
    compressed = encoded(np.zeros(int(silence_s * silence_rate_hz), np.float32), silence_rate_hz, "FLAC")
    under = encoded(np.zeros(int(19.0 * silence_rate_hz), np.float32), silence_rate_hz, "FLAC")  # 1.8 M: decoded
    assert len(compressed) < 200_000
    options = ["--threads", "1", "--max-samples", "2000000", "--upload-timeout-s", "2", "--header-timeout-s", "2"]
    with server_process(run_dir, options=options) as url:
        host, port = url.removeprefix("http://").split(":")
        uploads, headers, stop, attack = slow_clients(host, int(port), n_uploads=70, n_headers=20)
        try:
            time.sleep(0.5)
            with httpx.Client(timeout=5.0) as client:
                for _ in range(3):  # 70 dribbled uploads: more than the 64 requests allowed in flight
                    started = time.monotonic()
                    answer = client.post(f"{url}/predict", files={"file": ("a.wav", good)})
                    assert answer.status_code == 200 and time.monotonic() - started < 1.0, answer.text
                started = time.monotonic()
                refused = client.post(f"{url}/predict", files={"file": ("long.flac", compressed)})
                assert_error(refused, 413, "samples")
                assert time.monotonic() - started < 1.0  # refused from the header, before decoding
                with ThreadPoolExecutor(1) as pool:
                    heavy = pool.submit(client.post, f"{url}/predict", files={"file": ("u.flac", under)})
                    started = time.monotonic()
                    answer = client.post(f"{url}/predict", files={"file": ("a.wav", good)})
                    assert answer.status_code == 200 and time.monotonic() - started < 1.0
                    assert heavy.result().status_code == 200
            # the slow clients are cut off: uploads with 408 after 2 s, unfinished headers closed after 2 s
            assert all(closed_by_server(sock, 3.0) for sock in headers[:5] + uploads[:5])
        finally:
            stop.set()
            attack.join()
            for sock in uploads + headers:
                sock.close()


# --- limits on work: a pad/crop model decodes only its clip, long decodes take one of a few slots, the
# header cap holds however the bytes arrive, and a client that goes away is one log line at most

@pytest.fixture(scope="module")
def service(run_dir):
    return ModelService(load_model(run_dir, threads=1), ServeLimits(), "tones", str(run_dir))


def long_flac(seconds: float, rate_hz: int, lead: np.ndarray) -> bytes:
    """`lead` (at `rate_hz`) then silence up to `seconds`: a few hundred kB of FLAC, written in blocks."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate_hz, 1, format="FLAC") as out:
        out.write(lead)
        remaining = int(seconds * rate_hz) - len(lead)
        while remaining > 0:
            out.write(np.zeros(min(remaining, rate_hz * 4), np.float32))
            remaining -= rate_hz * 4
    return buffer.getvalue()


def test_a_pad_model_decodes_only_its_clip_of_a_long_file(service):
    from earmark.data.audio import resample

    rate_hz = 384_000
    lead = resample(tone_clip(TONES_HZ["high"], RATE_HZ, 0.5, 9), RATE_HZ, rate_hz)
    flac = long_flac(149.0, rate_hz, lead)  # 57 M samples: just under the default cap
    started = time.perf_counter()
    answer = service.predict(AudioRequest(flac), 3)
    elapsed_s = time.perf_counter() - started
    assert answer["duration_s"] == pytest.approx(149.0, abs=0.01) and answer["sample_rate_hz"] == rate_hz
    assert elapsed_s < 0.5, f"{elapsed_s:.2f} s: the whole file was decoded"  # decoding all of it takes seconds
    full, _ = decode_encoded(flac, 600.0, RATE_HZ)  # the first clip is what a full decode gives
    kept, _ = decode_encoded(flac, 600.0, RATE_HZ, keep_s=0.5)
    assert len(kept) < 0.6 * RATE_HZ < len(full)
    np.testing.assert_allclose(kept[:4000], full[:4000], atol=1e-5)
    short = io.BytesIO()
    sf.write(short, lead, rate_hz, format="WAV")
    assert service.predict(AudioRequest(short.getvalue()), 3)["label"] == answer["label"]


def test_long_decodes_take_a_slot_and_one_more_is_refused_at_once(service):
    flac = long_flac(60.0, 48_000, np.zeros(48_000, np.float32))  # 2.9 M samples: a long decode
    assert service.decode_slots.n_slots == 1
    with service.decode_slots.hold(LONG_DECODE_SAMPLES + 1):  # another request's long decode is running
        started = time.perf_counter()
        with pytest.raises(RequestError) as refused:
            service.timeline(AudioRequest(flac), 3, None, None)
        assert refused.value.status_code == 503 and "long decode" in refused.value.detail
        assert time.perf_counter() - started < 0.5
        # a short request, or a long file for a pad model (only its clip is decoded), needs no slot
        assert service.predict(AudioRequest(flac), 3)["duration_s"] == pytest.approx(60.0)
    assert len(service.timeline(AudioRequest(flac), 3, None, None)["windows"]) == 120  # the slot is free again
    slots = DecodeSlots(2)
    with slots.hold(LONG_DECODE_SAMPLES + 1), slots.hold(LONG_DECODE_SAMPLES + 1):
        with slots.hold(LONG_DECODE_SAMPLES):
            pass
        with pytest.raises(RequestError):
            with slots.hold(LONG_DECODE_SAMPLES + 1):
                pass


def test_header_cap_holds_in_one_write_and_a_vanished_client_is_one_line(run_dir, tmp_path):
    from earmark.serve.client import server_process

    log = tmp_path / "serve.log"
    with server_process(run_dir, options=["--threads", "1", "--log-level", "warning"], log_path=log) as url:
        host, port = url.removeprefix("http://").split(":")
        at_start = len(log.read_text())
        with socket.create_connection((host, int(port)), timeout=5) as sock:  # 60 KB of headers in one write
            padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(60))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
        for opening in (b"Content-Type: application/octet-stream\r\n",
                        b"Content-Type: multipart/form-data; boundary=XX\r\n"):
            with socket.create_connection((host, int(port)), timeout=5) as sock:  # gone mid-upload
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + opening + b"Content-Length: 100000\r\n\r\n"
                             + b"--XX\r\n" + b"\0" * 5000)
                time.sleep(0.3)
        time.sleep(0.5)
    text = log.read_text()[at_start:]
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]
    assert len(text.splitlines()) <= 1, text[-3000:]  # --log-level warning: no access log; at most one line
