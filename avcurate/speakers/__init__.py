"""Speaker stages: voice activity, diarization, faces, active speaker and lip sync (docs/speakers.md)."""
