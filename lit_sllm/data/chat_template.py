"""The chat template a run uses, from `llm.chat_template` (a file or the template text), and its checked kwargs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2 import nodes
from transformers import PreTrainedTokenizerBase

from lit_sllm.config_errors import ConfigError

# Used only when a tokenizer ships no chat template of its own (e.g. a base LM). The end tag is part of the
# assistant's trained tokens so the model learns to stop.
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Variables every render receives; a template reading them says nothing about `chat_template_kwargs`.
_RENDER_VARIABLES = frozenset({"messages", "add_generation_prompt", "tools", "documents", "raise_exception"})


def resolve_chat_template(value: str | None, key: str) -> str | None:
    """The template text of a config value: a Jinja string is itself, anything else must name a file.

    Raises:
        ConfigError: `value` is neither a template nor an existing file; names `key`.
    """
    if value is None or "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{key}: '{value}' is neither a file nor a Jinja template; give the path of a .jinja file or the "
            "template text itself."
        )
    return path.read_text()


def set_chat_template(tokenizer: PreTrainedTokenizerBase, value: str | None, key: str) -> PreTrainedTokenizerBase:
    """Gives `tokenizer` the template of config value `value` (file or text), or the fallback when it has none.

    The tokenizer then carries the template the run uses, so saving it (exports, run folders) saves that template.
    """
    template = resolve_chat_template(value, key)
    if template is not None:
        tokenizer.chat_template = template
    elif not tokenizer.chat_template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


class _GenerationBlock(jinja2.ext.Extension):
    """Parses `{% generation %}...{% endgeneration %}` (a marker some templates use for assistant spans) as its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def template_variables(template: str) -> set[str]:
    """Names a template reads from its render context (messages, add_generation_prompt, its own options, ...)."""
    environment = jinja2.Environment(extensions=[jinja2.ext.loopcontrols, _GenerationBlock])
    return set(jinja2.meta.find_undeclared_variables(environment.parse(template)))


def check_template_kwargs(template: str, kwargs: dict[str, Any], key: str) -> None:
    """Every kwarg must be read by the template: one it ignores would silently change nothing.

    Raises:
        ConfigError: names `key.<name>` of the first unread kwarg and the options the template does read.
    """
    if not kwargs:
        return
    unread = sorted(set(kwargs) - template_variables(template))
    if unread:
        options = sorted(template_variables(template) - _RENDER_VARIABLES)
        raise ConfigError(
            f"{key}.{unread[0]} is not read by the chat template, so it would change nothing; remove it "
            f"(the template reads {options or 'no options'})."
        )
