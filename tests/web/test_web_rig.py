"""A rig's `web:` section (port, host, allow), and how `stemstream live`'s --web flags override it; the QR
code printed for the page's address."""
import io

import pytest
import yaml

from bridge.cli.live import _web_settings
from bridge.cli.main import build_parser
from bridge.plugin.rig import RigError, load_rig, web_settings
from bridge.web.surface import WebSurface, qr_text
from streamer.errors import SettingsError

from conftest import write_yaml


def rig(tmp_path, **extra):
    config = write_yaml(tmp_path / "model.yaml", stems=("vocals", "other"), target=None,
                        extra_model={"num_stems": 2})
    data = {"model": {"config": str(config)}, "buses": {"main": {}, "monitor": {}}, **extra}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_rig_names_the_browser_mixer(tmp_path):
    path = rig(tmp_path, web={"port": 8080, "host": "0.0.0.0", "allow": ["192.168.1.0/24", "10.0.0.7"]})
    want = {"port": 8080, "host": "0.0.0.0", "allow": ["192.168.1.0/24", "10.0.0.7"]}
    assert web_settings(path) == want
    assert load_rig(path).web == want
    assert web_settings(rig(tmp_path, web={"port": 0})) == {"port": 0, "host": "127.0.0.1", "allow": []}
    assert web_settings(rig(tmp_path, web={"port": 9000, "allow": "10.1.0.0/16"}))["allow"] == ["10.1.0.0/16"]
    assert web_settings(rig(tmp_path)) is None and load_rig(rig(tmp_path)).web is None


@pytest.mark.parametrize("web, message", [
    ({"port": 70000}, "web.port: expected a port number 0 to 65535"),
    ({"port": "8080"}, "web.port"),
    ({"port": True}, "web.port"),
    ({"host": "0.0.0.0"}, "web.port"),
    ({"port": 8080, "allow": [5]}, "web.allow: expected a network or address"),
    ({"port": 8080, "allow": {"a": 1}}, "web.allow"),
    ({"port": 8080, "token": "secret-in-a-file"}, "web"),
    ("8080", "web"),
])
def test_a_bad_web_section_is_one_error_naming_the_key(tmp_path, web, message):
    path = rig(tmp_path, web=web)
    for read in (web_settings, load_rig):
        with pytest.raises(RigError, match=message) as err:
            read(path)
        assert path in str(err.value)


def settings(argv):
    return _web_settings(build_parser().parse_args(["live", *argv]))


def test_the_flags_override_the_rig(tmp_path):
    path = rig(tmp_path, web={"port": 8080, "host": "0.0.0.0", "allow": ["192.168.1.0/24"]})
    assert settings(["--rig", path]) == {"port": 8080, "host": "0.0.0.0", "allow": ["192.168.1.0/24"], "token": None}
    assert settings(["--rig", path, "--web", "9000", "--web-allow", "10.0.0.0/8", "--web-token", "abcdefgh12"]) == \
        {"port": 9000, "host": "0.0.0.0", "allow": ["10.0.0.0/8"], "token": "abcdefgh12"}
    assert settings(["--rig", path, "--web-host", "127.0.0.1"])["host"] == "127.0.0.1"
    assert settings([]) is None
    assert settings(["--web", "0"]) == {"port": 0, "host": "127.0.0.1", "allow": [], "token": None}
    with pytest.raises(SettingsError, match="--web-allow is required"):
        settings(["--web", "0", "--web-host", "0.0.0.0"])


def test_the_qr_code_holds_the_pages_address(tmp_path):
    import segno

    url = "http://192.168.1.20:8080/?t=abcdefghijklmnop"
    text = qr_text(url, border=2)
    rows = text.splitlines()
    size = segno.make(url, error="m").symbol_size(border=2)[0]
    assert len(rows) == (size + 1) // 2 and all(len(r) == size for r in rows)
    assert set(text) <= set(" \u2580\u2584\u2588\n")
    # back from the text to the modules (a light module is drawn, a dark one left blank): segno's matrix
    dark_top, dark_bottom = {" ", "\u2584"}, {" ", "\u2580"}
    grid = []
    for line in rows:
        grid.append([ch in dark_top for ch in line])
        grid.append([ch in dark_bottom for ch in line])
    matrix = segno.make(url, error="m").matrix
    inner = [row[2:2 + len(matrix)] for row in grid[2:2 + len(matrix)]]
    assert inner == [[bool(v) for v in row] for row in matrix]
    assert not any(grid[0]) and not any(row[0] for row in grid[:size])   # a light border around it


def test_the_surface_label_has_no_token(tmp_path):
    import streamer
    from standins import IdentityModel

    from bridge import StemSeparator

    config = streamer.load_config(write_yaml(tmp_path / "two.yaml", stems=("vocals", "other"), target=None,
                                             extra_model={"num_stems": 2}, chunk_size=4410))
    sep = StemSeparator(IdentityModel(2), config, latency="low")
    surface = WebSurface(sep, port=0, token="abcdefgh12345")
    try:
        assert surface.label.startswith("web: port 0")
        surface.start()
        assert surface.label == f"web: http://127.0.0.1:{surface.server.port}/"
        assert surface.url == f"http://127.0.0.1:{surface.server.port}/?t=abcdefgh12345"
        assert surface.counters()["clients"] == 0
        # the QR code where the terminal can show it; a line saying to use the address where it cannot
        assert surface.qr_for(io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) == qr_text(surface.url)
        assert "open the address" in surface.qr_for(io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    finally:
        surface.close()
        sep.engine.stop()
