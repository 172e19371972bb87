"""TLS (``stemstream serve --tls-cert/--tls-key``, ``wss://`` clients that verify the server) and rig files
whose model runs on the service (``model: {remote: URL, token_env: NAME}``).

The certificates are made here: a private CA and a server certificate it signs for 127.0.0.1 and
localhost. The service is a real ``stemstream serve`` (its own local Ray instance under a private
temporary folder, on a free port), stopped by its PID at the end."""
from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from bridge.cli.main import main
from streamer.remote.client import Connection
from streamer.remote.protocol import RemoteError

from remote_helpers import RATE, TOKEN, free_port, song, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[2]
TOKEN_ENV = "STEMSTREAM_TEST_SERVICE_TOKEN"


# ------------------------------------------------------------------ certificates
PASSPHRASE = "a passphrase for the test key"
PASSPHRASE_ENV = "STEMSTREAM_TEST_TLS_PASSPHRASE"

def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(folder: pathlib.Path, name: str = "ca"):
    """A CA: (its key, its certificate, the certificate's PEM path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"stemstream test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(folder: pathlib.Path, ca_key, ca_cert) -> tuple[pathlib.Path, pathlib.Path]:
    """(certificate, key) PEM files for 127.0.0.1 and localhost, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
    encrypted = folder / "server-encrypted.key"     # the same key under a passphrase
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the tests make their certificates with the cryptography package")
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert, ca = make_ca(folder)
    cert, key = make_server_cert(folder, ca_key, ca_cert)
    _, _, other_ca = make_ca(folder, "other-ca")
    stray_key = folder / "stray.key"
    stray_key.write_bytes(_pem_key(_key()))
    return dict(ca=ca, cert=cert, key=key, other_ca=other_ca, stray_key=stray_key, folder=folder,
                encrypted_key=folder / "server-encrypted.key")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


# ------------------------------------------------------------------ refusals before anything starts
def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_tls_files_are_checked_before_ray_starts(model, pki, capsys, tmp_path, monkeypatch):
    cfg, ckpt = model
    base = ["serve", "--config", str(cfg), "--checkpoint", str(ckpt), "--token", TOKEN]
    missing = tmp_path / "nope.pem"
    assert main(base + ["--tls-cert", str(missing), "--tls-key", str(pki["key"])]) == 1
    assert _one_error(capsys) == f"error: --tls-cert: no such file: {missing}"
    assert main(base + ["--tls-cert", str(pki["cert"])]) == 1
    assert _one_error(capsys) == "error: --tls-cert and --tls-key go together (the certificate and its private " \
                                 "key, PEM)"
    assert main(base + ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["stray_key"])]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: --tls-cert {pki['cert']} / --tls-key {pki['stray_key']}: not a PEM certificate "
                           "and its matching private key (")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert main(base + ["--tls-cert", str(garbage), "--tls-key", str(pki["key"])]) == 1
    assert "not a PEM certificate and its matching private key" in _one_error(capsys)
    # an encrypted key: its passphrase comes from an environment variable, and OpenSSL never asks on the terminal
    enc = pki["encrypted_key"]
    assert main(base + ["--tls-cert", str(pki["cert"]), "--tls-key", str(enc)]) == 1
    assert _one_error(capsys) == (f"error: --tls-key {enc} is encrypted: put its passphrase in an environment "
                                  f"variable and name it with --tls-key-password-env VAR")
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    assert main(base + ["--tls-cert", str(pki["cert"]), "--tls-key", str(enc), "--tls-key-password-env",
                        PASSPHRASE_ENV]) == 1
    assert _one_error(capsys) == f"error: --tls-key {enc}: the passphrase in ${PASSPHRASE_ENV} does not open it"
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert main(base + ["--tls-cert", str(pki["cert"]), "--tls-key", str(enc), "--tls-key-password-env",
                        PASSPHRASE_ENV]) == 1
    assert _one_error(capsys) == f"error: --tls-key-password-env {PASSPHRASE_ENV}: no such environment variable"
    assert main(base + ["--tls-key-password-env", PASSPHRASE_ENV]) == 1
    assert _one_error(capsys) == "error: --tls-key-password-env goes with --tls-key (the encrypted key it opens)"
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_client_tls_settings_are_one_line_each(pki, tmp_path):
    with pytest.raises(RemoteError, match=r"^a TLS CA file goes with a wss:// URL; 'ws://127.0.0.1:9/stream' is not "
                                          r"encrypted \(use wss://\)$"):
        Connection("ws://127.0.0.1:9", TOKEN, tls_ca=pki["ca"])
    with pytest.raises(RemoteError, match=r"^cannot read the TLS CA file .*nope\.pem: No such file or directory"):
        Connection("wss://127.0.0.1:9", TOKEN, tls_ca=tmp_path / "nope.pem")
    with pytest.raises(RemoteError, match=r"^the service's URL must start with ws:// or wss:// \(TLS\), got "
                                          r"'https://127.0.0.1:9'$"):
        Connection("https://127.0.0.1:9", TOKEN)


def _write_rig(folder: pathlib.Path, model: dict, engine: dict | None = None, **extra) -> pathlib.Path:
    import yaml

    data = {"model": model, "engine": engine or {"residual": "spread"},
            "stems": {"vocals": {"mute": True}}, "buses": {"main": {}, "monitor": {"vocals": {"gain_db": -6}}},
            **extra}
    path = folder / "remote-rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_remote_rig_is_refused_with_one_line_before_connecting(tmp_path, monkeypatch, model, capsys):
    from bridge.plugin.rig import RigError, load_rig

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    rig = _write_rig(tmp_path, {"remote": "wss://127.0.0.1:9", "token": "in-the-file-0123"})
    with pytest.raises(RigError, match=r"model\.token: a rig file does not hold the service's token; name the "
                                       r"environment variable"):
        load_rig(rig)
    rig = _write_rig(tmp_path, {"remote": "wss://127.0.0.1:9", "token_env": TOKEN_ENV})
    with pytest.raises(RigError, match=rf"^{rig}: model\.token_env: the environment variable {TOKEN_ENV} is not set "
                                       r"\(it holds the service's token; or give --token\)$"):
        load_rig(rig)
    rig = _write_rig(tmp_path, {"remote": "wss://127.0.0.1:9", "config": "x.yaml"})
    with pytest.raises(RigError, match="give model.remote .* or model.config and model.checkpoint .*, not both"):
        load_rig(rig)
    rig = _write_rig(tmp_path, {"remote": "http://127.0.0.1:9"})
    with pytest.raises(RigError, match=r"model\.remote: expected ws://HOST:PORT or wss://HOST:PORT \(TLS\)"):
        load_rig(rig, token=TOKEN)
    # nothing listens there: one line naming the file
    rig = _write_rig(tmp_path, {"remote": f"ws://127.0.0.1:{free_port()}"})
    with pytest.raises(RigError, match=rf"^{rig}: model\.remote: cannot reach the service at ws://127\.0\.0\.1:"):
        load_rig(rig, token=TOKEN)
    # serve cannot serve a rig whose model is elsewhere
    assert main(["serve", "--rig", str(rig), "--token", TOKEN]) == 1
    assert "its model is on a service already (model.remote)" in _one_error(capsys)


# ------------------------------------------------------------------ against a real `stemstream serve`
@pytest.fixture(scope="module")
def tls_service(model, pki):
    pytest.importorskip("ray.serve", reason="the serve extra is not installed")
    cfg, ckpt = model
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths live under it
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(REPO), **{PASSPHRASE_ENV: PASSPHRASE})
    # the key under a passphrase (from the environment): it must reach Serve's proxy, which speaks TLS with it
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config", str(cfg), "--checkpoint",
                             str(ckpt), "--port", str(port), "--token", TOKEN, "--local-cpus", "2",
                             "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["encrypted_key"]),
                             "--tls-key-password-env", PASSPHRASE_ENV, "--preset", "balanced"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=str(REPO))
    try:
        line = proc.stdout.readline()  # blocks until the service is up (or the command ended)
        url = f"wss://127.0.0.1:{port}/stream"
        assert line.startswith(f"serving tiny at {url} (status: https://127.0.0.1:{port}/status)"), \
            (line, proc.stderr.read() if proc.poll() is not None else "")
        yield dict(url=url, port=port, cfg=cfg, ckpt=ckpt)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _https_status(port: int, ca) -> dict:
    context = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10, context=context) as r:
        return json.loads(r.read())


def test_a_wss_client_works_with_the_ca_and_fails_clearly_without_it(tls_service, pki):
    url = tls_service["url"]
    conn = Connection(url, TOKEN, tls_ca=pki["ca"])
    try:
        assert list(conn.models) == ["tiny"]
        assert len(conn.round_trip(2)) == 2
    finally:
        conn.close()
    assert _https_status(tls_service["port"], pki["ca"])["version"] == 1
    with pytest.raises(RemoteError) as exc:   # the system's CAs do not know the test CA
        Connection(url, TOKEN)
    assert str(exc.value).startswith(f"TLS verification of {url} failed: ")
    assert "certificate" in str(exc.value) and "--tls-ca FILE" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(RemoteError, match=rf"^TLS verification of {url} failed: .*; it is not signed by the CA in "
                                          rf"{pki['other_ca']}$"):
        Connection(url, TOKEN, tls_ca=pki["other_ca"])
    with pytest.raises(RemoteError):   # plain ws:// to a TLS service: no connection
        Connection(f"ws://127.0.0.1:{tls_service['port']}", TOKEN, timeout=3)
    with pytest.raises((OSError, http.client.HTTPException)):   # nor plain http to the status
        urllib.request.urlopen(f"http://127.0.0.1:{tls_service['port']}/status", timeout=5)


def test_separate_remote_over_wss_equals_local_separate(tls_service, pki, tmp_path, capsys):
    wav = tmp_path / "song.wav"
    sf.write(wav, song(1.3, seed=5).T, RATE, subtype="FLOAT")
    assert main(["separate", str(wav), "--remote", tls_service["url"], "--tls-ca", str(pki["ca"]), "--token", TOKEN,
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert main(["separate", str(wav), "--config", str(tls_service["cfg"]), "--checkpoint", str(tls_service["ckpt"]),
                 "--out", str(tmp_path / "l"), "--no-progress"]) == 0
    remote = sorted(p.relative_to(tmp_path / "r") for p in (tmp_path / "r").rglob("*.wav"))
    assert remote and remote == sorted(p.relative_to(tmp_path / "l") for p in (tmp_path / "l").rglob("*.wav"))
    for rel in remote:
        x, _ = sf.read(tmp_path / "r" / rel, dtype="float32")
        y, _ = sf.read(tmp_path / "l" / rel, dtype="float32")
        assert x.shape == y.shape and np.abs(x - y).max() <= 1e-5 and np.abs(y).max() > 0.01
    capsys.readouterr()
    two = tmp_path / "two.wav"
    shutil.copy(wav, two)
    assert main(["separate", str(wav), str(two), "--remote", tls_service["url"], "--token", TOKEN,
                 "--out", str(tmp_path / "n"), "--no-progress"]) == 1
    line = _one_error(capsys)   # one line for both files, and nothing written
    assert line.startswith(f"error: TLS verification of {tls_service['url']} failed: ") and "--tls-ca FILE" in line
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").rglob("*.wav"))


def test_a_rig_on_the_service_builds_a_separator_with_the_rigs_mixer(tls_service, pki, tmp_path, monkeypatch):
    from bridge.plugin.rig import RigError, load_rig
    from bridge.plugin.separator import StemSeparator

    shutil.copy(pki["ca"], tmp_path / "ca.pem")   # relative to the rig file
    rig = _write_rig(tmp_path, {"remote": tls_service["url"], "token_env": TOKEN_ENV, "tls_ca": "ca.pem",
                                "wire": "fp16"}, engine={"residual": "spread", "hop": 0.125})
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    spec = load_rig(rig)
    assert spec.remote.url == tls_service["url"] and spec.remote.tls_ca == str(tmp_path / "ca.pem")
    assert list(spec.config.stems) == ["vocals", "other"] and spec.checkpoint is None
    assert "token" not in rig.read_text().replace("token_env", "")
    sep = StemSeparator.from_rig(rig)   # not started: the engine's host connects when the stream starts
    assert sep.engine.hop == int(0.125 * RATE) and sep.engine.window == 22050
    assert sep.mixer.bus_names == ["main", "monitor"] and sep.mixer.stems["vocals"].mute
    link = sep.engine._host.link
    assert link.wire == "fp16" and link.tls_ca == str(tmp_path / "ca.pem") and link.token == TOKEN
    with pytest.raises(RigError, match=r"the service's model runs at the service's preset: drop the latency preset"):
        StemSeparator.from_rig(rig, latency="low")
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(RigError, match=rf"model\.token_env: the environment variable {TOKEN_ENV} is not set"):
        StemSeparator.from_rig(rig)
    with pytest.raises(RigError, match=r"model\.remote: the server refused: wrong token"):
        load_rig(rig, token="wrong-token-000")
    rig = _write_rig(tmp_path, {"remote": tls_service["url"], "tls_ca": "ca.pem"}, engine={"window": 1.0})
    with pytest.raises(RigError, match=r"engine\.window: the service sets the model's window, preset, device and "
                                       r"precision; a remote rig's engine may set hop, lookahead, residual"):
        load_rig(rig, token=TOKEN)
    rig = _write_rig(tmp_path, {"remote": tls_service["url"]})
    with pytest.raises(RigError, match=rf"^{rig}: model\.remote: TLS verification of {tls_service['url']} failed: "):
        load_rig(rig, token=TOKEN)


def test_live_runs_a_rig_on_the_service_over_wss(tls_service, pki, tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "live"))
    import jack_helpers
    import live_helpers

    if jack_helpers.JACKD is None:
        pytest.skip("jackd is not installed (make install installs jackd2)")
    rig = _write_rig(tmp_path, {"remote": tls_service["url"], "token_env": TOKEN_ENV, "tls_ca": str(pki["ca"])})
    wav = tmp_path / "song.wav"
    sf.write(wav, song(3.0, seed=6).T, RATE, subtype="FLOAT")
    with jack_helpers.JackServer(log_dir=str(tmp_path)) as server:
        server.env[TOKEN_ENV] = TOKEN
        r = live_helpers.run_live(server, ["--rig", str(rig), "--input-file", str(wav), "--output", "system",
                                           "--no-ui", "--seconds", "2.5", "--record", str(tmp_path / "take")])
        server.env.pop(TOKEN_ENV)
        unset = live_helpers.run_live(server, ["--rig", str(rig), "--input-file", str(wav), "--output", "system",
                                               "--no-ui"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"model: on the service at {tls_service['url']}" in r.stdout
    take = live_helpers.read_take(tmp_path / "take")
    s, x = take["session"], take["input"]
    assert s["model"]["remote"] == tls_service["url"] and s["model"]["rig"] == str(rig)
    assert s["model"]["round_trips_ms"] and s["buses"] == ["main", "monitor"]
    L = s["latency_samples"]
    assert np.abs(x).max() > 0.1
    # late or not, the stems add up to the delayed input (the rig mutes the vocals on main)
    np.testing.assert_allclose(sum(take["stems"].values()), live_helpers.delayed(x, L), atol=2e-6)
    assert unset.returncode != 0
    last = unset.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"the environment variable {TOKEN_ENV} is not set" in last


def test_behind_a_local_proxy_the_forwarded_address_is_the_one_checked(tls_service, pki):
    """A TLS proxy on this machine (README: nginx/Caddy) connects from 127.0.0.1 and names the client in
    X-Forwarded-For: the service checks that address against --allow (and counts streams per it)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from streamer.remote.protocol import VERSION, dumps, loads

    context = ssl.create_default_context(cafile=str(pki["ca"]))
    replies = {}
    for forwarded in (None, "10.1.2.3"):
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        with connect(tls_service["url"], ssl=context, additional_headers=headers, compression=None) as ws:
            try:
                ws.send(dumps({"type": "hello", "version": VERSION, "token": TOKEN}))
            except ConnectionClosed:
                pass   # a refused address is answered (and closed) before the hello is read
            replies[forwarded] = loads(ws.recv(timeout=10))
    assert replies[None]["type"] == "hello" and list(replies[None]["models"]) == ["tiny"]
    assert replies["10.1.2.3"] == {"type": "error", "message": "address 10.1.2.3 is not allowed"}


# The README's reverse-proxy example: TLS at nginx, the service on 127.0.0.1 (PORT, CERT, KEY filled in).
NGINX_SITE = """
map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
}
server {
    listen LISTEN ssl;
    ssl_certificate     CERT;
    ssl_certificate_key KEY;
    location / {
        proxy_pass http://127.0.0.1:PORT;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_buffering off;
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
    }
}
"""


def _serve(cfg, ckpt, port: int, extra: list[str], ray_tmp: str) -> subprocess.Popen:
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config", str(cfg), "--checkpoint",
                             str(ckpt), "--port", str(port), "--token", TOKEN, "--local-cpus", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=str(REPO))


def test_the_readme_nginx_example_serves_wss_in_front_of_a_plain_service(model, pki, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx is not installed (the README's reverse-proxy example)")
    pytest.importorskip("ray.serve", reason="the serve extra is not installed")
    cfg, ckpt = model
    port, proxy_port = free_port(), free_port()
    site = (NGINX_SITE.replace("LISTEN", f"127.0.0.1:{proxy_port}").replace("CERT", str(pki["cert"]))
            .replace("KEY", str(pki["key"])).replace("PORT", str(port)))
    temp = "".join(f"    {k}_temp_path {tmp_path}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(f"{user}daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
                                         f"error_log {tmp_path}/error.log;\nevents {{}}\n"
                                         f"http {{\n    access_log off;\n{temp}{site}}}\n")
    ray_tmp = tempfile.mkdtemp(prefix="rn-", dir="/tmp")
    service = _serve(cfg, ckpt, port, [], ray_tmp)
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = service.stdout.readline()
        assert line.startswith(f"serving tiny at ws://127.0.0.1:{port}/stream"), line
        url = f"wss://127.0.0.1:{proxy_port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = Connection(url, TOKEN, tls_ca=pki["ca"])
                break
            except RemoteError:
                assert proxy.poll() is None, proxy.stderr.read()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        try:
            assert list(conn.models) == ["tiny"] and len(conn.round_trip(2)) == 2
        finally:
            conn.close()
        from streamer.remote.client import separate_array_remote

        stems = separate_array_remote(url, TOKEN, song(0.8, seed=7), tls_ca=pki["ca"])
        assert sorted(stems) == ["other", "vocals"] and stems["vocals"].shape == (2, int(0.8 * RATE))
        assert _https_status(proxy_port, pki["ca"])["windows"] > 0
        with pytest.raises(RemoteError, match="TLS verification of"):
            Connection(url, TOKEN)
    finally:
        for proc in (proxy, service):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (proxy, service):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(ray_tmp, ignore_errors=True)
