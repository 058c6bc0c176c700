"""Reading sources lists: every row validated, every malformed row named by its line; clip cutting."""

from __future__ import annotations

import pytest

from earmark.errors import EarmarkError
from earmark.fetch.clips import clip_bounds
from earmark.fetch.drive import file_download_url, parse_drive_link
from earmark.fetch.report import FetchError
from earmark.fetch.sources import read_sources

GOOD_YAML = """\
defaults:
  license: CC BY 4.0
sources:
  - url: https://www.youtube.com/watch?v=abcdefghijk
    label: drone
    start_s: 1:05
    end_s: 90.5
  - url: https://drive.google.com/file/d/1AbCdEfGhIjKlMnOp/view?usp=sharing
    label: speech
    license: CC0
  - url: https://drive.google.com/drive/folders/1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2
    label: car
  - link: https://example.org/clips/harmful.zip
    class: harmful
  - url: https://example.org/media/clip.mp4
    label: car
    kind: video
    start: "00:01:02.5"
"""


def test_yaml_rows_resolve_kinds_times_aliases_and_defaults(tmp_path):
    path = tmp_path / "SOURCES.yaml"
    path.write_text(GOOD_YAML)
    rows = read_sources(path)
    assert [r.kind for r in rows] == ["video", "drive", "drive", "http", "video"]
    assert [r.line for r in rows] == [4, 8, 11, 13, 15]
    assert rows[0].start_s == 65 and rows[0].end_s == 90.5
    assert rows[4].start_s == 62.5
    assert [r.license for r in rows] == ["CC BY 4.0", "CC0", "CC BY 4.0", "CC BY 4.0", "CC BY 4.0"]
    assert rows[3].label == "harmful" and rows[3].url.endswith("harmful.zip")


def test_every_malformed_yaml_row_is_named_by_its_line(tmp_path):
    path = tmp_path / "SOURCES.yaml"
    path.write_text("""\
- url: https://example.org/a.wav
  label: ok
- url: https://example.org/b.wav
- url: ftp://example.org/c.wav
  label: x
- url: https://example.org/d.wav
  label: x
  start_s: 5
  end_s: 3
- url: https://example.org/e.wav
  lable: typo
- https://example.org/f.wav
- url: https://example.org/g.wav
  label: x
  start_s: soon
- url: https://drive.google.com/drive/my-drive
  label: x
- url: https://example.org/a.wav
  label: again
""")
    with pytest.raises(EarmarkError) as caught:
        read_sources(path)
    message = str(caught.value)
    for expected in ("line 3: label is missing", "line 4: url 'ftp://example.org/c.wav' must be an http",
                     "line 6: end_s (3) must be after start_s (5)", "line 10: unknown field 'lable'",
                     "line 12: expected a mapping", "line 13: start_s 'soon' is not a time",
                     "line 16: not a Google Drive file or folder link",
                     "line 18: repeats the source and times of line 1"):
        assert expected in message, message
    assert "8 malformed row(s)" in message


def test_csv_rows_with_line_numbers_comments_and_bad_cells(tmp_path):
    path = tmp_path / "SOURCES.csv"
    path.write_text("url,label,start_s,end_s,license\n"
                    "https://example.org/a.wav,dog,,,CC0\n"
                    "\n"
                    "# a comment line\n"
                    "https://youtu.be/abcdefghijk,car,0:10,0:20,\n")
    rows = read_sources(path)
    assert [(r.line, r.kind, r.start_s, r.end_s) for r in rows] == [(2, "http", None, None), (5, "video", 10, 20)]
    path.write_text("url,label\nhttps://example.org/a.wav,dog\nhttps://example.org/b.wav,cat,extra\n,cat\n")
    with pytest.raises(EarmarkError, match=r"line 3: 1 cell\(s\) more than the header.*line 4: url is missing"):
        read_sources(path)


def test_missing_or_empty_or_unknown_sources_files_say_what_to_do(tmp_path):
    with pytest.raises(EarmarkError, match="does not exist"):
        read_sources(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("sources: []\n")
    with pytest.raises(EarmarkError, match="lists no sources"):
        read_sources(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("- url: [unclosed\n")
    with pytest.raises(EarmarkError, match="not valid YAML at line"):
        read_sources(tmp_path / "bad.yaml")
    (tmp_path / "list.txt").write_text("https://example.org/a.wav\n")
    with pytest.raises(EarmarkError, match=".yaml, .yml, .csv or .tsv"):
        read_sources(tmp_path / "list.txt")


@pytest.mark.parametrize("url, expected", [
    ("https://drive.google.com/file/d/1AbCdEfGhIjKlMnOp/view?usp=sharing", ("file", "1AbCdEfGhIjKlMnOp")),
    ("https://drive.google.com/open?id=1AbCdEfGhIjKlMnOp", ("file", "1AbCdEfGhIjKlMnOp")),
    ("https://drive.google.com/uc?id=1AbCdEfGhIjKlMnOp&export=download", ("file", "1AbCdEfGhIjKlMnOp")),
    ("https://docs.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOp", ("file", "1AbCdEfGhIjKlMnOp")),
    ("https://drive.google.com/drive/folders/1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2?usp=sharing",
     ("folder", "1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2")),
    ("https://drive.google.com/drive/u/0/folders/1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2",
     ("folder", "1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2")),
])
def test_drive_links_of_every_documented_shape(url, expected):
    assert parse_drive_link(url) == expected
    assert file_download_url("1AbCdEfGhIjKlMnOp") == "https://drive.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOp"
    assert file_download_url("X" * 12, "http://127.0.0.1:8/drive/").startswith("http://127.0.0.1:8/drive/uc?")


def test_clip_bounds_cut_segments_and_keep_a_long_enough_tail():
    rate = 100
    assert clip_bounds(1000, rate, None, None, None) == [(0, 1000)]
    assert clip_bounds(1000, rate, 2.0, 5.0, None) == [(200, 500)]
    assert clip_bounds(1000, rate, 1.0, 99.0, None) == [(100, 1000)]  # an end past the audio is clipped
    # 2.6 s in 1-s clips: the 0.6-s tail is kept (>= half a clip); 2.4 s: the 0.4-s tail is dropped
    assert clip_bounds(260, rate, None, None, 1.0) == [(0, 100), (100, 200), (200, 260)]
    assert clip_bounds(240, rate, None, None, 1.0) == [(0, 100), (100, 200)]
    with pytest.raises(FetchError, match="past the end"):
        clip_bounds(1000, rate, 10.0, None, None)
    # a segment no longer than a clip is one clip of its own length (prepare pads it), like data.clip: chunk
    assert clip_bounds(1000, rate, 0.0, 0.3, 1.0) == [(0, 30)]
    assert clip_bounds(40, rate, None, None, 1.0) == [(0, 40)]
    assert clip_bounds(100, rate, None, None, 1.0) == [(0, 100)]
    with pytest.raises(FetchError, match="holds no audio"):
        clip_bounds(1000, rate, 3.0, 2.0, 1.0)
