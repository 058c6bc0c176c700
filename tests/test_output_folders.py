"""Outputs land where users look: inspect under runs/inspect-<name>, the augment preview apart."""


def test_inspect_writes_a_named_visible_folder_and_the_preview_apart(tone_config, tmp_path):
    from earmark import api

    plain = api.inspect(tone_config)
    assert plain.out_dir == tmp_path / "runs" / "inspect-tones"
    assert str(plain.out_dir) in plain.text
    preview = api.inspect(tone_config, ["augment.freq_masks=2"], augment=True)
    assert preview.out_dir == tmp_path / "runs" / "inspect-tones-augment"
    assert (preview.out_dir / "augment.png").is_file() and not (plain.out_dir / "augment.png").exists()
    assert "augment" not in (plain.out_dir / "summary.json").read_text()
