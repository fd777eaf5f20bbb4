"""The pure core: definitions, templates, outcomes, rules, vocabulary, the workflow/activity contracts.

Nothing here does I/O, so workflow code may import it (the sandbox lets `tocsin.core` through, nothing else).
This package imports nothing on its own: import the module you need.
"""
