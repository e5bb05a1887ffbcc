"""``python -m workos_emulator [--host 127.0.0.1] [--port N] [--seed PATH] [--data-dir DIR]``."""

from __future__ import annotations

import argparse
import os
import sys

from werkzeug.serving import run_simple

from . import DEFAULT_API_KEY, DEFAULT_CLIENT_ID, create_app, demo_seed_path
from .persistence import StateFileError


def main(argv: list[str] | None = None) -> None:
    """Run the emulator (threaded werkzeug server)."""
    parser = argparse.ArgumentParser(prog="workos_emulator", description="Local WorkOS API emulator")
    parser.add_argument("--host", default=os.environ.get("WORKOS_EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WORKOS_EMULATOR_PORT", "4100")))
    parser.add_argument("--seed", default=os.environ.get("WORKOS_EMULATOR_SEED") or demo_seed_path(),
                        help="seed YAML/JSON (default: the bundled demo seed; pass '' for an empty state)")
    parser.add_argument("--data-dir", default=os.environ.get("WORKOS_EMULATOR_DATA_DIR", "instance/emulator"))
    parser.add_argument("--api-key", default=os.environ.get("WORKOS_EMULATOR_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--client-id", default=os.environ.get("WORKOS_EMULATOR_CLIENT_ID", DEFAULT_CLIENT_ID))
    parser.add_argument("--public-url", default=os.environ.get("WORKOS_EMULATOR_PUBLIC_URL"))
    args = parser.parse_args(argv)
    ttl = int(os.environ.get("WORKOS_EMULATOR_ACCESS_TOKEN_TTL", "300"))
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    try:
        app = create_app(
            args.seed or None,
            data_dir=args.data_dir,
            api_key=args.api_key,
            client_id=args.client_id,
            access_token_ttl=ttl,
            public_url=public_url,
        )
    except StateFileError as exc:  # one line naming the file and the remedy, not a traceback
        print(f"workos_emulator: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"WorkOS emulator on {public_url} (client_id={args.client_id})", flush=True)
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
