"""Parameter accounting of multi-task nets, and a command line that prints it.

Usage::

    python -m medmtl.networks.summary [--tasks ct_organ_seg,cxr_findings] [--sharing hard]
        [--channels 16 32 64 128] [--num-res-units 1] [--shared-stages 2] [--no-benchmark] [--json]

prints the parameters of each component (encoder(s), cross-stitch units, each head), the ratio of
the multi-task net's parameters to those of one single-task net per task (same encoder and heads),
and the cost of a 2D encoder pass relative to a pure 2D twin
(:func:`medmtl.networks.benchmark.benchmark_encoder_2d`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from medmtl.networks.accounting import parameter_summary, single_task_parameter_total
from medmtl.networks.benchmark import benchmark_encoder_2d
from medmtl.networks.multitask import MultiTaskNet
from medmtl.networks.sharing import SHARING_MODES
from medmtl.tasks import TASKS, resolve_tasks

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m medmtl.networks.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all registered)")
    parser.add_argument("--sharing", default="hard", choices=sorted(SHARING_MODES))
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="encoder widths")
    parser.add_argument("--num-res-units", type=int, default=1)
    parser.add_argument("--shared-stages", type=int, default=2, help="shared stages (mixed sharing)")
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--benchmark-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--benchmark-repeats", type=int, default=10)
    parser.add_argument("--no-benchmark", action="store_true", help="skip the 2D cost measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns what it prints."""
    args = _parse(argv)
    tasks = resolve_tasks(args.tasks if args.tasks else list(TASKS))
    kwargs: dict[str, Any] = {"num_res_units": args.num_res_units, "fpn_channels": args.fpn_channels}
    if args.channels:
        kwargs["channels"] = tuple(args.channels)
    net = MultiTaskNet(tasks, sharing=args.sharing, shared_stages=args.shared_stages, **kwargs)
    summary = parameter_summary(net)
    single = single_task_parameter_total(tasks, **kwargs)
    report: dict[str, Any] = {
        "sharing": args.sharing,
        "tasks": [t.name for t in tasks],
        "parameters": summary,
        "single_task_total": single,
        "parameter_ratio": summary["total"] / single,
    }
    if not args.no_benchmark:
        report["encoder_2d_cost"] = benchmark_encoder_2d(
            channels=kwargs.get("channels", net.trunk.out_channels),
            num_res_units=args.num_res_units,
            spatial_size=tuple(args.benchmark_size),
            repeats=args.benchmark_repeats,
        )
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return report
    width = max(len(k) for k in summary) + 2
    lines = [
        f"{args.sharing} sharing, tasks: {', '.join(report['tasks'])}",
        f"{'component':<{width}}{'parameters':>12}",
    ]
    lines += [f"{name:<{width}}{count:>12,}" for name, count in summary.items()]
    lines.append(f"{'single-task nets':<{width}}{single:>12,}")
    lines.append(f"parameter ratio (multi-task / single-task nets): {report['parameter_ratio']:.3f}")
    if "encoder_2d_cost" in report:
        cost = report["encoder_2d_cost"]
        lines.append(
            f"2D encoder pass {tuple(cost['input_shape'])} on {cost['device']}: shared {cost['shared_2d_ms']:.2f} ms, "
            f"pure 2D {cost['plain_2d_ms']:.2f} ms, ratio {cost['ratio']:.3f}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    main()
