"""``xling task``: show a task's splits, languages, labels and examples (its options:
:mod:`xling.recipes.task.config`)."""
