"""The recipe: argument dataclasses (every key, its default and help), strict parsing of a JSON recipe plus
``--key value`` overrides, and the value checks a type cannot express. Light: the recipe commands' ``--help`` reads
it without torch (import hf_medtl.config.recipe for ``load_recipe``)."""
