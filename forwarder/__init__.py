"""podhose forwarder: tails Kubernetes container log files and ships raw lines to Firehose."""
