"""The demo: generate a small sample set (some files deliberately broken), list it in a manifest with where each
video came from, curate that, print what happened; the run's report.html shows it.

    python -m avcurate.demo --workdir demo-output
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from . import cli
from .sample import SampleSet, make_sample_set

CONFIG = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "demo.yaml"
# Made-up provenance for the samples, varied, so that the report has licenses, uploaders and origins to summarise.
_LICENSES = ("CC-BY-4.0", "CC0-1.0", "CC-BY-SA-4.0", "CC-BY-4.0")  # one license commoner than the others
_UPLOADERS = ("city-archive", "nature-films", "studio-k")
_ORIGINS = ("https://media.example.org/v/", "https://www.example.com/watch?v=", "https://archive.example.net/items/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avcurate.demo", description=__doc__)
    parser.add_argument("--workdir", default="demo-output", help="where the samples and the output go")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    inputs, output = os.path.join(args.workdir, "inputs"), os.path.join(args.workdir, "output")
    manifest = os.path.join(args.workdir, "manifest.csv")
    print(f"generating sample videos in {inputs} ...", flush=True)
    samples = make_sample_set(inputs)
    print(f"  {len(samples.files)} files in {samples.seconds:.1f} s "
          f"({sum(f.expect == 'failed' for f in samples.files)} deliberately broken)\n", flush=True)
    write_manifest(samples, manifest)
    print(f"curating them, as listed in {manifest} (with license, uploader and origin_url), with "
          f"{CONFIG.relative_to(Path.cwd()) if CONFIG.is_relative_to(Path.cwd()) else CONFIG} into {output} ...",
          flush=True)  # fmt: skip
    code = cli.main(
        ["run", "--config", str(CONFIG), "--input", manifest, "--output", output, "--overwrite",
         "--workers", str(args.workers)]
    )
    if code == 0:
        shards = sorted(Path(output, "shards").glob("*.tar"))
        print(f"\nsee the report:        {output}/report.html")
        print(f"inspect it again with: .venv/bin/avcurate inspect {output}")
        if shards:
            first, last = (s.stem.rsplit("-", 1) for s in (shards[0], shards[-1]))
            url = f"{output}/shards/{first[0]}-{{{first[1]}..{last[1]}}}.tar"
            print(f"train on it with:      avcurate.loader.make_loader('{url}')")
    return code


def write_manifest(samples: SampleSet, path: str) -> None:
    """A CSV manifest of every sample, by path relative to the manifest, with a license, uploader and origin URL."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "license", "uploader", "origin_url"])
        for number, sample in enumerate(samples.files):
            writer.writerow([
                os.path.relpath(os.path.abspath(sample.path), folder), _LICENSES[number % len(_LICENSES)],
                _UPLOADERS[number // 2 % len(_UPLOADERS)], f"{_ORIGINS[number % len(_ORIGINS)]}{sample.key}",
            ])  # fmt: skip


if __name__ == "__main__":
    cli.exit_after(main())
