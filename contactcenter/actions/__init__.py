"""The only code that writes. Views, consumers, tasks and adapters call these; events go out on commit."""
