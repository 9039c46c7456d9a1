"""Demo data sets, written once: scripts/demo.sh calls every app's `make_data --demo DIR`."""
import os
import shutil

COMPLETE = ".complete-demo"


def write_once(out, write):
    """Run write(out) unless a previous call completed; a partial folder is written anew."""
    if os.path.exists(os.path.join(out, COMPLETE)):
        print(f"demo data already in {out}")
        return
    shutil.rmtree(out, ignore_errors=True)
    write(out)
    open(os.path.join(out, COMPLETE), "w").close()
