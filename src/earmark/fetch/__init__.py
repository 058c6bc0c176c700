"""Getting the data: `earmark fetch` and `earmark datasets`.

    sources.py   read SOURCES.yaml / SOURCES.csv rows and validate them (line numbers in errors)
    names.py     file names from the network made safe; paths kept inside the target folder
    state.py     state.json: the finished downloads of a folder, so a second run skips them
    download.py  HTTP(S) with retries, Range/If-Range resume, hashing while streaming, atomic renames
    archives.py  zip/tar checked before extraction (no escaping members, links, devices, bombs)
    video.py     YouTube and other video sites through yt-dlp's Python API
    drive.py     Google Drive file links (the documented download URL) and folders (listed by gdown)
    clips.py     any audio to mono WAV at one rate, optionally cut into fixed-length clips
    runner.py    a sources list end to end: metadata.csv, fetch_failures.csv, a summary
    presets.py   ESC-50, UrbanSound8K, FSDD, Speech Commands: where, license, size, checksum, layout
    entry.py     `fetch(source, to, ...)`: a sources list or a preset, options checked against the kind
"""
