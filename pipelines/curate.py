"""Entry point for launching the curation pipeline on a cluster runner (Dataflow, Flink, Spark).

Identical to `avcurate run`; kept as a script because cluster launchers often want a file to run:

    python pipelines/curate.py --input gs://bucket/raw/ --output gs://bucket/curated/ \
        --config pipelines/configs/default.yaml \
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \
        --sdk_container_image REGISTRY/avcurate:0.1.0 --experiments use_runner_v2
"""

import sys

from avcurate.cli import exit_after, main

if __name__ == "__main__":
    exit_after(main(["run", *sys.argv[1:]]))
