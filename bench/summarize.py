"""Prints bench/run.sh's result lines as a table with tally/peer ratios.

Lines are `workload.system|ops_per_s|p50_ms|p99_ms|server_cpu_us_per_op|note`;
comment lines start with `#`, engine-bench lines with `engine: `.
"""

import sys

# workload -> (the peer row, the goal as a ratio of throughput, p99 no worse?)
PEERS = {
    "single": ("redis", 1.0, False),
    "batched": ("redis_cluster", 1.0, False),
    "durable": ("redis", 5.0, False),
    # The same job (issue 23's goals): an event's four rollups, replicated.
    "same_fast_b1": ("redis", 3.0, True),
    "same_fast_b16": ("redis", 5.0, True),
    "same_fast_b256": ("redis", 5.0, True),
    "same_sync_b1": ("redis", 3.0, True),
    "same_sync_b16": ("redis", 5.0, True),
    "same_sync_b256": ("redis", 5.0, True),
}


def main(path):
    rows, engine, header = {}, [], []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("#"):
            header.append(line)
        elif line.startswith("engine: "):
            engine.append(line[len("engine: "):])
        elif "|" in line:
            name, ops, p50, p99, cpu, note = line.split("|", 5)
            rows[name] = (float(ops), float(p50), float(p99), float(cpu), note)
    print("\n".join(header))
    print(f"{'row':<52} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/op':>10}  note")
    for name, (ops, p50, p99, cpu, note) in rows.items():
        print(f"{name:<52} {ops:>10.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>10.1f}  {note}")
    print()
    print(f"{'ratio tally / peer':<52} {'ops/s':>10} {'p99':>8} {'CPU/op':>10}  goal")
    for workload, (peer, goal, p99_too) in PEERS.items():
        base = rows.get(f"{workload}.{peer}")
        if not base:
            continue
        for name, r in rows.items():
            if not name.startswith(f"{workload}.tally"):
                continue
            ratio = r[0] / base[0]
            cpu = r[3] / base[3] if base[3] else 0
            met = ratio >= goal and (not p99_too or r[2] <= base[2])
            goal_text = f">= {goal:g}x" + (", p99 no worse" if p99_too else "")
            print(
                f"{name + ' / ' + peer:<52} {ratio:>9.2f}x {r[2] / base[2]:>7.2f}x {cpu:>9.2f}x"
                f"  {goal_text}: {'met' if met else 'not met'}"
            )
    for name, r in rows.items():
        if name.startswith("reads.tally"):
            verdict = "met" if r[2] <= 1.0 else "not met"
            print(f"{name + ' p99':<52} {r[2]:>9.3f} ms  goal <= 1 ms: {verdict}")
    if engine:
        print()
        print("\n".join(engine))


if __name__ == "__main__":
    main(sys.argv[1])
