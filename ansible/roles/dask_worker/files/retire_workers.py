"""Retire every Dask worker of one host: the scheduler moves their data to the other workers first.

Run inside the scheduler container (its TLS client settings come from the environment):
    python - SCHEDULER_ADDRESS HOST < retire_workers.py
Prints "retired N" or "nothing to retire"; exits 1 with the reason when a worker cannot be retired.
"""

import sys

from distributed import Client


def main(scheduler_address: str, host: str) -> int:
    with Client(scheduler_address, timeout=30) as client:
        workers = [address for address, info in client.scheduler_info()["workers"].items() if info["host"] == host]
        if not workers:
            print("nothing to retire")
            return 0
        retired = client.retire_workers(workers=workers, close_workers=True)
        kept = sorted(set(workers) - set(retired))
        if kept:
            print(
                f"could not retire {', '.join(kept)}: no other worker could take their data "
                "(add a worker first, or stop the computations that hold it)",
                file=sys.stderr,
            )
            return 1
        print(f"retired {len(workers)}")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
