"""Local SDK worker process: Beam's own, with its start-up chatter (INFO) kept off the user's terminal."""

from __future__ import annotations

import logging

from apache_beam.runners.worker import sdk_worker_main


class _DropLocalNoise(logging.Filter):
    """Without a semi-persistent directory (which local runs never have) Beam warns once per worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No semi_persistent_directory")


def main() -> None:
    # Beam's harness raises the root logger to INFO before it reads any option; this holds whatever it sets.
    logging.disable(logging.INFO)
    logging.getLogger("apache_beam.runners.worker.sdk_worker_main").addFilter(_DropLocalNoise())
    sdk_worker_main.main(None)


if __name__ == "__main__":
    main()
