"""The demo: generate a small sample set (some files deliberately broken), curate it, print what happened.

    python -m avcurate.demo --workdir demo-output
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import cli
from .sample import make_sample_set

CONFIG = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avcurate.demo", description=__doc__)
    parser.add_argument("--workdir", default="demo-output", help="where the samples and the output go")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    inputs, output = os.path.join(args.workdir, "inputs"), os.path.join(args.workdir, "output")
    print(f"generating sample videos in {inputs} ...", flush=True)
    samples = make_sample_set(inputs)
    print(f"  {len(samples.files)} files in {samples.seconds:.1f} s "
          f"({sum(f.expect == 'failed' for f in samples.files)} deliberately broken)\n", flush=True)
    print(f"curating them with {CONFIG.relative_to(Path.cwd()) if CONFIG.is_relative_to(Path.cwd()) else CONFIG} "
          f"into {output} ...", flush=True)
    code = cli.main(
        ["run", "--config", str(CONFIG), "--input", inputs, "--output", output, "--overwrite",
         "--workers", str(args.workers)]
    )
    if code == 0:
        shards = sorted(Path(output, "shards").glob("*.tar"))
        print(f"\ninspect it again with: .venv/bin/avcurate inspect {output}")
        if shards:
            first, last = (s.stem.rsplit("-", 1) for s in (shards[0], shards[-1]))
            url = f"{output}/shards/{first[0]}-{{{first[1]}..{last[1]}}}.tar"
            print(f"train on it with:      avcurate.loader.make_loader('{url}')")
    return code


if __name__ == "__main__":
    cli.exit_after(main())
