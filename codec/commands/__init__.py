"""One module per `voxtok` subcommand, each with register(subparsers)."""
