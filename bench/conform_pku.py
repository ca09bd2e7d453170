"""Protection keys on x86-64 (issue 18): every case of the ``access-pku`` conform space where the
leaf's key can decide (``emu.conform.x86_64.key_cases``: CR4.PKE=1, key 1 with AD1 or WD1, a data
access, a walk that reaches a user-mode leaf), run on Unicorn and compared with the SDM model.

    python -m bench.conform_pku [--json]

The whole space has 15,851,520 cases, of which P=0 and reserved bits decide most before any key
is looked at; these 33,024 are the ones PKRU can change.  Prints how many the model says PKRU
forbids (#PF with PK) and the mismatches; exit 1 if any is unexplained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conform_pku", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from emu.conform import x86_64 as C

    cases = C.key_cases(C.PKU)
    runner = C.Runner(C.PKU)
    pk = [0]
    expected = C.expected

    def counting(*a: object) -> object:
        res, ad = expected(*a)  # type: ignore[arg-type]
        pk[0] += getattr(res, "code", None) is not None and bool(res.code & 0x20)  # type: ignore[union-attr]
        return res, ad

    C.expected = counting  # type: ignore[assignment]
    t0 = time.perf_counter()
    try:
        rep = runner.run(cases, C.new_report(C.PKU))
    finally:
        C.expected = expected  # type: ignore[assignment]
        runner.close()
    wall = time.perf_counter() - t0
    out = {"space": C.PKU.size, "cases": rep.run, "agree": rep.agree, "model_faults": rep.faults,
           "model_pk_faults": pk[0], "mismatches_by_class": rep.by_class(), "wall_s": round(wall, 1),
           "mismatches": [m.to_json() for m in rep.mismatches[:50]]}
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"conform x86_64 access-pku, the cases the key can decide: {rep.run} of {C.PKU.size} "
              f"in {wall:.1f} s: {rep.agree} agree, {len(rep.mismatches)} mismatches")
        print(f"  the model: {rep.faults} faults, {pk[0]} of them #PF with PK (PKRU forbids)")
        for m in rep.mismatches[:50]:
            print(f"  {m.explained_by or 'UNEXPLAINED'}: {m.description}: {m.field}: model {m.model}, "
                  f"machine {m.machine}")
    return 1 if rep.unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
