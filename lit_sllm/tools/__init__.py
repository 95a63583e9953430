"""Tool subcommands of `lit-sllm` (data, toy, params, ...), each exposing `add_parser(subparsers)`."""
