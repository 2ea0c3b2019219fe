"""Back to the field: device configuration (the twin) and commands (docs/control.md).

``store`` keeps desired and reported configuration and the command log in the database;
``service`` is the one process that publishes them to devices and stores their answers.
"""
