"""argv and environment of the node contract: no shell, one value one argument."""

import pytest

from orchestrator.command import (
    env_name,
    expand_argv,
    node_environment,
    placeholder_values,
    split_exec,
)


def test_exec_is_split_like_a_shell_then_expanded_per_token():
    tokens = split_exec("convert '${image}' -resize \"${width}x\" ${resized}")
    values = placeholder_values(
        {"image": "/pipewell/in/image.png"},
        {"resized": "/pipewell/out/resized.png"},
        {"width": "800"},
    )
    assert expand_argv(tokens, values) == [
        "convert",
        "/pipewell/in/image.png",
        "-resize",
        "800x",
        "/pipewell/out/resized.png",
    ]


def test_a_value_with_spaces_and_shell_syntax_stays_one_argument():
    tokens = split_exec("echo ${msg}")
    argv = expand_argv(tokens, {"msg": "a b; rm -rf / $(id) `id`"})
    assert argv == ["echo", "a b; rm -rf / $(id) `id`"]


def test_unknown_placeholders_are_left_as_written():
    assert expand_argv(["sh", "-c", "echo ${HOME} ${x}"], {"x": "1"}) == [
        "sh",
        "-c",
        "echo ${HOME} 1",
    ]


def test_unbalanced_quote_is_an_error():
    with pytest.raises(ValueError):
        split_exec("echo 'oops")


def test_environment_names_are_upper_case_with_underscores():
    env = node_environment(
        {"input-image": "/pipewell/in/input-image.png"},
        {"out.file": "/pipewell/out/out.file"},
        {"maxWidth": "5"},
    )
    assert env == {
        "INPUT_INPUT_IMAGE": "/pipewell/in/input-image.png",
        "OUTPUT_OUT_FILE": "/pipewell/out/out.file",
        "FLAG_MAXWIDTH": "5",
    }
    assert env_name("FLAG_", "a b-c") == "FLAG_A_B_C"


def test_inputs_win_over_outputs_and_flags_on_name_clash():
    values = placeholder_values(
        {"x": "in"}, {"x": "out", "y": "out"}, {"x": "f", "y": "f", "z": "f"}
    )
    assert values == {"x": "in", "y": "out", "z": "f"}
