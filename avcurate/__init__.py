"""avcurate: curation and preprocessing of audio-visual pretraining data, on Apache Beam."""

import logging


class _QuietOptionalGcpNotice(logging.Filter):
    """Beam warns on import when its optional GCP extras are absent; that is expected without `[gcp]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_QuietOptionalGcpNotice())

__version__ = "0.1.0"
