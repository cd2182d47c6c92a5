#!/usr/bin/env python3
"""python-paillier 1.5 operations that `pheutil` cannot do, for the interop tests.

Every command reads and writes pheutil's file shapes (JWK-style keys, `{"v", "e"}`
ciphertexts), so the tests can feed the results to the `paillier` CLI.

  probe                          print phe's version and whether gmpy2 is used
  encrypt PUBLIC VALUE [--int] [--exponent E]
                                 encrypt keeping phe's own exponent (pheutil
                                 always lowers it to -32); VALUE as int with
                                 --int; --exponent lowers it to E
  decrypt PRIVATE CIPHERTEXT     print repr(value) and the exponent, tab separated
  check-key PRIVATE              load a private key with phe and check it (n = p*q)
  sub PUBLIC A B                 encrypted A - B (phe's __sub__), keeping exponents
  reprs                          stdin: one f64 bit pattern (16 hex digits) a line;
                                 stdout: Python's repr of each float
  decode                         stdin: "MANTISSA EXPONENT" a line; stdout: repr of
                                 what phe's EncodedNumber.decode returns for it
  pheutil ARGS...                the real pheutil (phe.command_line.cli) with ARGS
  batch                          stdin: one JSON list of arguments a line, each a
                                 command above (pheutil included) run in this one
                                 process, in order; stdout: one JSON object a line,
                                 {"ok": bool, "stdout": str, "stderr": str}. Saves
                                 starting Python (and importing phe) per command.
"""
import argparse
import contextlib
import io
import json
import struct
import sys
import traceback

import phe
from phe import util


def load_public(path):
    with open(path) as f:
        data = json.load(f)
    assert data["kty"] == "DAJ" and data["alg"] == "PAI-GN1", "not a phe public key"
    return phe.PaillierPublicKey(util.base64_to_int(data["n"]))


def load_private(path):
    with open(path) as f:
        data = json.load(f)
    assert data["kty"] == "DAJ" and "decrypt" in data["key_ops"], "not a phe private key"
    pub = phe.PaillierPublicKey(util.base64_to_int(data["pub"]["n"]))
    p = util.base64_to_int(data["p"])
    q = util.base64_to_int(data["q"])
    return pub, phe.PaillierPrivateKey(pub, p, q), data


def load_encrypted(path, pub):
    with open(path) as f:
        data = json.load(f)
    return phe.EncryptedNumber(pub, int(data["v"]), exponent=data["e"])


def dump_encrypted(enc):
    print(json.dumps({"v": str(enc.ciphertext()), "e": enc.exponent}))


def run_pheutil(args):
    """The real pheutil, raising instead of exiting."""
    from phe.command_line import cli
    cli.main(args=args, prog_name="pheutil", standalone_mode=False)


def run_captured(argv):
    """Runs one command, returning (ok, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    ok = True
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
    except SystemExit as e:
        ok = e.code in (0, None)
    except Exception:  # a failing command is a result to report, not a crash
        ok = False
        traceback.print_exc(file=err)
    return ok, out.getvalue(), err.getvalue()


def main(argv):
    if argv and argv[0] == "pheutil":
        run_pheutil(argv[1:])
        return 0
    if argv and argv[0] == "batch":
        for line in sys.stdin:
            if line.strip():
                ok, out, err = run_captured(json.loads(line))
                print(json.dumps({"ok": ok, "stdout": out, "stderr": err}), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe")
    enc = sub.add_parser("encrypt")
    enc.add_argument("public")
    enc.add_argument("value")
    enc.add_argument("--int", action="store_true")
    enc.add_argument("--exponent", type=int)
    dec = sub.add_parser("decrypt")
    dec.add_argument("private")
    dec.add_argument("ciphertext")
    chk = sub.add_parser("check-key")
    chk.add_argument("private")
    sb = sub.add_parser("sub")
    sb.add_argument("public")
    sb.add_argument("a")
    sb.add_argument("b")
    sub.add_parser("reprs")
    sub.add_parser("decode")
    args = ap.parse_args(argv)

    if args.cmd == "probe":
        print(json.dumps({"phe": phe.__version__, "gmpy2": util.HAVE_GMP}))
    elif args.cmd == "encrypt":
        pub = load_public(args.public)
        value = int(args.value) if args.int else float(args.value)
        number = pub.encrypt(value)
        if args.exponent is not None:
            number = number.decrease_exponent_to(args.exponent)
        dump_encrypted(number)
    elif args.cmd == "decrypt":
        pub, priv, _ = load_private(args.private)
        number = load_encrypted(args.ciphertext, pub)
        print("%r\t%d" % (priv.decrypt(number), number.exponent))
    elif args.cmd == "check-key":
        pub, priv, data = load_private(args.private)
        assert priv.p * priv.q == pub.n
        print(json.dumps({"bits": pub.n.bit_length(), "kid": data.get("kid"),
                          "pub_kid": data["pub"].get("kid")}))
    elif args.cmd == "sub":
        pub = load_public(args.public)
        a = load_encrypted(args.a, pub)
        b = load_encrypted(args.b, pub)
        dump_encrypted(a - b)
    elif args.cmd == "reprs":
        for line in sys.stdin.read().split():
            print(repr(struct.unpack(">d", bytes.fromhex(line))[0]))
    elif args.cmd == "decode":
        for line in sys.stdin.read().splitlines():
            mantissa, exponent = (int(t) for t in line.split())
            try:
                if exponent >= 0:
                    value = mantissa * 16 ** exponent
                else:
                    value = mantissa / 16 ** -exponent
                print(repr(value))
            except OverflowError:
                print("OverflowError")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
