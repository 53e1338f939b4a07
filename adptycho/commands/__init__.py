"""The subcommands of ``adptycho`` (the entry point is ``adptycho.cli.main``).

One module per command, each with ``NAME``, ``add_parser(subparsers) -> rules`` and
``run(args)``. ``run`` is load -> config -> call -> save; ``rules`` maps every option of the
command to its applicability rule (``adptycho.commands.options``). Importing a command module
imports no TensorFlow: ``run`` imports what it needs. Shared machinery: ``options`` (option
groups and rules), ``rules``, ``checks`` (the checks of a parsed command line before it runs)
and ``tensorboard`` (``--tensorboard`` on the fitting commands).
"""
