"""Jobs: the pipeline's steps put together (fit, measure, report), below the CLI."""
