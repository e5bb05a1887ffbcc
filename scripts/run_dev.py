"""`make run`: migrate, start the WorkOS emulator and the app, seed the demo data, and wait for Ctrl-C.

Ports: the emulator listens on WORKOS_EMULATOR_PORT (4100), the app on PORT (8000), both on 127.0.0.1.
HATIDATA_PUBLIC_URL defaults to the app's address, http://127.0.0.1:$PORT: redirect URIs are built from it,
never from the Host header, so open the app at that address (not http://localhost:$PORT).
Every variable of the environment reaches both servers; WORKOS_EMULATOR_ACCESS_TOKEN_TTL (seconds, default
300) sets the lifetime of the access tokens the emulator issues (short to watch sessions refresh).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EMULATOR_API_KEY = "sk_test_emulator"
DEV_WEBHOOK_SECRET = "whsec_hatidata_development"  # noqa: S105 - public: hatidata_auth.config.DEVELOPMENT_WEBHOOK_SECRET
PLUGIN_ENTRY_POINTS = "hatidata_auth.idp_plugins"  # hatidata_auth.idp.registry.ENTRY_POINT_GROUP
DEMO_DOMAINS = ("acme.test", "globex.test", "initech.test", "umbrella.test")


def wait_for(url: str, what: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll *url* until it answers 200, or fail if *proc* exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # our own local URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not become ready at {url} within {timeout:.0f}s")


def port_taken(host: str, port: int) -> bool:
    """Whether another process listens on *host*:*port*: a bind fails then. Address reuse is allowed, as gunicorn
    allows it, so the connections a server just stopped left in TIME_WAIT do not count (a restart on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def emulator_call(base: str, method: str, path: str, body: dict[str, object]) -> dict[str, object]:
    """Call the emulator's control API."""
    request = urllib.request.Request(  # our own local URL
        f"{base}{path}", method=method, data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {EMULATOR_API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def seed_passwords(base: str) -> dict[str, str]:
    """The passwords the emulator generated for the demo's password users (once per data folder)."""
    request = urllib.request.Request(f"{base}/_emulator/seed_passwords",  # our own local URL
                                     headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return {str(k): str(v) for k, v in json.loads(response.read() or b"{}").items()}


def register_redirect_uris(base: str, public_url: str) -> None:
    """Register the app's callbacks (sign-in, each IdP plugin's wizard test sign-in) and its sign-out return at
    its public URL, as an operator does in the WorkOS dashboard: WorkOS (and the emulator) sends a code only to a
    registered redirect URI."""
    public = public_url.rstrip("/")
    plugins = sorted({ep.name for ep in entry_points(group=PLUGIN_ENTRY_POINTS)})
    for uri in [f"{public}/auth/callback", f"{public}/admin/sso/rotation/callback",
                *(f"{public}/admin/sso/{name}/test-login/callback" for name in plugins)]:
        emulator_call(base, "POST", "/_emulator/redirect_uris", {"kind": "redirect", "uri": uri})
    emulator_call(base, "POST", "/_emulator/redirect_uris", {"kind": "logout", "uri": f"{public}/"})


def main() -> int:
    """Run both servers until Ctrl-C."""
    # Ctrl-C stops both servers whatever this process inherited: a shell starts a background job (`make run &`,
    # CI's side-by-side runs) with SIGINT ignored, and the servers would then stop while this launcher went on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    host = "127.0.0.1"
    emulator_port = int(os.environ.get("WORKOS_EMULATOR_PORT", "4100"))
    app_port = int(os.environ.get("PORT", "8000"))
    emulator_url = f"http://{host}:{emulator_port}"
    app_url = f"http://{host}:{app_port}"
    env = dict(os.environ)
    env.setdefault("HATIDATA_ENV", "development")
    env["WORKOS_BASE_URL"] = env.get("WORKOS_BASE_URL") or emulator_url
    env.setdefault("HATIDATA_PUBLIC_URL", app_url)
    env["PORT"] = str(app_port)
    webhook_secret = env.setdefault("WORKOS_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    # An operator's own secret is never printed; the development default is public anyway.
    signed_with = (f"the development default {DEV_WEBHOOK_SECRET}" if webhook_secret == DEV_WEBHOOK_SECRET
                   else "your WORKOS_WEBHOOK_SECRET")
    token_ttl = env.setdefault("WORKOS_EMULATOR_ACCESS_TOKEN_TTL", "300")
    if not token_ttl.isdigit() or int(token_ttl) < 1:
        sys.exit(f"WORKOS_EMULATOR_ACCESS_TOKEN_TTL={token_ttl!r} is not a positive number of seconds")
    instance = Path(env.get("HATIDATA_INSTANCE_PATH") or ROOT / "instance")
    env["HATIDATA_INSTANCE_PATH"] = str(instance)
    # Checked before anything starts: the readiness checks below would be answered by another instance's servers
    # (a second `make run`), which printed the banner and seeded that instance before failing.
    for name, port in (("WORKOS_EMULATOR_PORT", emulator_port), ("PORT", app_port)):
        if port_taken(host, port):
            sys.exit(f"port {port} on {host} ({name}) is in use, perhaps by another `make run`: stop it, or choose "
                     f"free ports, e.g. PORT={app_port + 1} WORKOS_EMULATOR_PORT={emulator_port + 1} make run")

    print("==> migrating the embedded database", flush=True)
    subprocess.run([PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True)

    procs: list[subprocess.Popen[bytes]] = []

    def stop_all(*_: object) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        print(f"==> starting the WorkOS emulator on {emulator_url}", flush=True)
        emulator = subprocess.Popen(  # fixed argument list
            [PYTHON, "-m", "workos_emulator", "--host", host, "--port", str(emulator_port),
             "--data-dir", str(instance / "emulator")],
            cwd=ROOT, env=env,
        )
        procs.append(emulator)
        wait_for(f"{emulator_url}/_emulator/health", "the emulator", emulator)

        print("==> seeding the demo organizations (idempotent)", flush=True)
        subprocess.run([PYTHON, "-m", "flask", "--app", "wsgi", "hatidata", "seed-demo"],
                       cwd=ROOT, env=env, check=True)

        print(f"==> starting the app (gunicorn) on {app_url}", flush=True)
        app = subprocess.Popen(  # fixed argument list
            [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"), "wsgi:app"],
            cwd=ROOT, env=env,
        )
        procs.append(app)
        wait_for(f"{app_url}/healthz", "the app", app)

        emulator_call(emulator_url, "POST", "/_emulator/webhook_endpoints",
                      {"endpoint_url": f"{app_url}/webhooks/workos", "secret": webhook_secret})
        register_redirect_uris(emulator_url, env["HATIDATA_PUBLIC_URL"])
        owner_password = seed_passwords(emulator_url).get("owner@hooli.test", "(none)")
        print(f"""
HatiData Auth is running.
  app:             {app_url}            (health: {app_url}/healthz, readiness: {app_url}/readyz)
  sign in:         {app_url}/             (enter a demo email; admins get the SSO setup wizard)
  WorkOS emulator: {emulator_url}            (hosted login pages for each demo organization)
  access tokens:   live {token_ttl} s, then the app refreshes them (WORKOS_EMULATOR_ACCESS_TOKEN_TTL)
  webhooks:        {app_url}/webhooks/workos is registered with the emulator, signed with
                   {signed_with}

Demo logins with SSO (type the email on the sign-in page: the emulator's IdP signs that user in; no passwords):
""" + "\n".join(f"  {d:14} admin@{d}  dev@{d}  viewer@{d}" for d in DEMO_DOMAINS) + f"""
  consultant@partners.test   (member of Acme Corp and Globex)
Hooli (hooli.test) has no SSO: AuthKit's own sign-in methods.
  owner@hooli.test           password: {owner_password}   (admin; generated once for this data folder)
  member@hooli.test          "Email me a code"; the emulator sends no email, read the code with
                             curl -H 'Authorization: Bearer {EMULATOR_API_KEY}' \\
                               '{emulator_url}/_emulator/magic_auth?email=member@hooli.test'

Press Ctrl-C to stop both servers.
""", flush=True)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        failed = [p for p in procs if p.poll() is not None]
        print(f"a server exited (code {failed[0].returncode}); stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
