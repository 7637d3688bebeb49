"""`clouddigit login`: get an API token and keep it, with the console's address, in the config file."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from clouddigit.cli.client import Client, configured_url, write_config
from clouddigit.cli.common import Subcommands


def add_commands(top: Subcommands) -> None:
    parser = top.add_parser("login", help="get an API token and save it with the console's URL")
    parser.add_argument("--url", help="console address (default: CLOUDDIGIT_URL, the config file, or local)")
    parser.add_argument("--username")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.set_defaults(handler=login, parser=parser)


def login(args: argparse.Namespace) -> None:
    if args.password_stdin and not args.username:
        args.parser.error("--password-stdin needs --username")
    url = (args.url or configured_url()).rstrip("/")
    username = args.username or input("Username: ")
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    token = Client(url).obtain_token(username=username, password=password)
    path = write_config(url=url, token=token)
    print(f"Logged in to {url} as {username}; wrote {path}")
    if os.environ.get("CLOUDDIGIT_TOKEN"):
        print(f"note: CLOUDDIGIT_TOKEN is set and wins over {path}", file=sys.stderr)
