"""The pipeline: study stability, the durable job queue and (later) the processing worker."""
