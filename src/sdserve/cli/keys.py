"""``sdserve keys create|list|grant|revoke`` and ``sdserve webhooks secret``: managing the
API keys (credits, limits, usage) and the webhook signing secret kept in the job database."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import load_settings

__all__ = ["add_key_commands"]


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (for database_url).")
    p.add_argument("--data-dir", type=Path, help="Data dir whose database holds the keys.")


def _database(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from sdserve.compose import build_database

    return build_database(load_settings(args.config, data_dir=args.data_dir))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


_LIMIT_FLAGS = {"max_steps": int, "max_side": int, "max_pixels": int, "max_images": int, "max_cost": float}


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ..service.keys import KeyStore
    from ..service.limits import RequestLimits

    per_request = RequestLimits(**{k: getattr(args, k) for k in _LIMIT_FLAGS})
    record, key = KeyStore(_database(args)).create(args.name, args.rate_limit, args.credits,
                                                   compute_credits=args.compute_credits, limits=per_request)
    limits = [f"{record.rate_limit} requests/min" if record.rate_limit else "no rate limit",
              f"{record.credits} image credits" if record.credits is not None else "no image credit limit",
              f"{record.compute_credits:g} compute credits" if record.compute_credits is not None
              else "no compute credit limit"]
    if record.limits.to_json():
        limits.append(f"per request {record.limits.to_json()}")
    print(key)
    print(f"# id {record.id}, {', '.join(limits)}. This is the only time the key is shown.")
    return 0


def _used(used: float, total: float | None) -> str:
    return f"{used:g}/{total:g}" if total is not None else f"{used:g}/-"


def cmd_keys_grant(args: argparse.Namespace) -> int:
    from ..service.keys import KeyStore

    record = KeyStore(_database(args)).grant(args.key, args.images or 0, args.compute or 0.0)
    print(f"{record.id}: images {_used(record.credits_used, record.credits)}, "
          f"compute {_used(record.compute_used, record.compute_credits)} (used/total)")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from ..service.keys import KeyStore

    keys = KeyStore(_database(args)).list()
    if not keys:
        print("no keys (the server is open unless api_keys is set)")
        return 0
    print(f"{'id':17} {'prefix':11} {'name':16} {'created':17} {'rate/min':>8} {'images used/total':>17} "
          f"{'compute used/total':>20}  state")
    for k in keys:
        state = "active" if k.active else f"revoked {_when(k.revoked_at)}"
        if k.limits.to_json():
            state += f", per request {k.limits.to_json()}"
        print(f"{k.id:17} {k.prefix + '…':11} {(k.name or '-')[:16]:16} {_when(k.created_at):17} "
              f"{k.rate_limit or '-':>8} {_used(k.credits_used, k.credits):>17} "
              f"{_used(round(k.compute_used, 2), k.compute_credits):>20}  {state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ..service.keys import KeyStore

    record = KeyStore(_database(args)).revoke(args.key)
    print(f"revoked {record.id}" + (f" ({record.name})" if record.name else ""))
    return 0


def cmd_webhooks_secret(args: argparse.Namespace) -> int:
    from ..service.store import JobStore
    from ..service.webhooks import signing_secret

    print(signing_secret(JobStore(_database(args))))
    return 0


def add_key_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="Create, list and revoke API keys.")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    p = ksub.add_parser("create", help="Create a key and print it (once).")
    _store_args(p)
    p.add_argument("--name", help="A label to recognise the key by.")
    p.add_argument("--rate-limit", type=int, help="Requests per minute (unlimited if unset).")
    p.add_argument("--credits", type=int, help="Images this key may generate in total (unlimited if unset).")
    p.add_argument("--compute-credits", type=float,
                   help="Compute units this key may spend in total (one unit: an SD 1.5 UNet evaluation at 512x512; "
                        "a default SD 1.5 image costs 40). Unlimited if unset.")
    for flag, kind in _LIMIT_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=kind,
                       help=f"Per-request limit for this key ({flag.removeprefix('max_')}); narrows the server's.")
    p.set_defaults(func=cmd_keys_create)
    p = ksub.add_parser("grant", help="Add image or compute credits to a key.")
    _store_args(p)
    p.add_argument("key", help="The key's id (key_...).")
    p.add_argument("--images", type=int, help="Image credits to add.")
    p.add_argument("--compute", type=float, help="Compute credits to add.")
    p.set_defaults(func=cmd_keys_grant)
    p = ksub.add_parser("list", help="List keys with their usage (never the keys themselves).")
    _store_args(p)
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("revoke", help="Revoke a key by its id (key_...) or the key itself.")
    _store_args(p)
    p.add_argument("key")
    p.set_defaults(func=cmd_keys_revoke)

    hooks = sub.add_parser("webhooks", help="Webhook signing.")
    hsub = hooks.add_subparsers(dest="webhooks_command", required=True)
    p = hsub.add_parser("secret", help="Print the whsec_ secret webhooks are signed with (made on first use).")
    _store_args(p)
    p.set_defaults(func=cmd_webhooks_secret)
