"""`python -m sparse_attn_conformance.reports merge RUN.json [RUN.json ...] -o PAGE.html`: several
runs (several kernels, or a kill-rate run beside others) on one page."""

import argparse
import sys

from sparse_attn_conformance.reports import html, model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparse_attn_conformance.reports")
    sub = ap.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge run reports into one HTML page")
    merge.add_argument("runs", nargs="+", help="conformance-*.json files")
    merge.add_argument("-o", "--output", required=True, help="the HTML page to write")
    args = ap.parse_args(argv)
    html.write(model.load(args.runs), args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
