"""Genotype loading, validation and saving: names, JSON, Genotype(...) strings, every error."""
import json

import pytest

import genotypes
from genotypes import (
    DARTS_V2,
    Genotype,
    GenotypeError,
    cell_edges,
    genotype_to_dict,
    is_restricted,
    load_genotype,
    save_genotype,
    validate,
)

UNRESTRICTED = Genotype(
    normal=[("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 1, 2), ("skip_connect", 0, 2),
            ("dil_conv_5x5", 2, 3), ("sep_conv_5x5", 1, 3), ("max_pool_3x3", 3, 5),
            ("avg_pool_3x3", 1, 5), ("sep_conv_3x3", 1, 5)],
    normal_concat=[2, 3, 5],
    reduce=[("max_pool_3x3", 0, 2), ("max_pool_3x3", 1, 2), ("skip_connect", 2, 3),
            ("sep_conv_3x3", 0, 3), ("dil_conv_3x3", 1, 4), ("sep_conv_5x5", 0, 4),
            ("avg_pool_3x3", 3, 5), ("skip_connect", 4, 5)],
    reduce_concat=[2, 3, 4, 5],
)


def write(tmp_path, text, name="g.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def as_json(genotype, **changes):
    return json.dumps({**genotype_to_dict(genotype), **changes})


@pytest.mark.parametrize("name", sorted(genotypes.NAMED))
def test_published_genotypes_are_valid(name):
    validate(genotypes.NAMED[name], name)


def test_primitives_are_the_authors_seven_in_order():
    assert genotypes.PRIMITIVES == [
        "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
        "dil_conv_3x3", "dil_conv_5x5",
    ]


def test_load_by_name():
    assert load_genotype("DARTS_V2") is DARTS_V2


@pytest.mark.parametrize("genotype", [DARTS_V2, UNRESTRICTED], ids=["restricted", "unrestricted"])
def test_save_load_round_trip(tmp_path, genotype):
    path = tmp_path / "sub" / "59.txt"
    save_genotype(genotype, path)
    loaded = load_genotype(path)
    assert loaded == genotype
    assert is_restricted(loaded) == is_restricted(genotype)
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def test_authors_layout_json_loads(tmp_path):
    # The authors write json.dumps(genotype._asdict()): tuples become lists, nothing else.
    text = json.dumps(DARTS_V2._asdict())
    assert load_genotype(write(tmp_path, text)) == DARTS_V2


def test_genotype_string_as_printed_in_logs(tmp_path):
    assert load_genotype(repr(DARTS_V2)) == DARTS_V2
    line = f"2026-01-01 12:00:00 genotype = {DARTS_V2!r} (epoch 59)\n"
    assert load_genotype(write(tmp_path, line, "log.txt")) == DARTS_V2


def test_genotype_string_with_range_concat():
    text = repr(DARTS_V2).replace("[2, 3, 4, 5]", "range(2, 6)")
    assert load_genotype(text) == DARTS_V2


def test_cell_edges_assigns_pairs_to_nodes():
    assert [dst for _, _, dst in cell_edges(DARTS_V2.normal)] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert cell_edges(UNRESTRICTED.normal) == UNRESTRICTED.normal


def assert_one_line_error(spec, *fragments):
    with pytest.raises(GenotypeError) as info:
        load_genotype(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_error_bad_json(tmp_path):
    path = write(tmp_path, '{"normal": [["sep_conv_3x3", 0],')
    assert_one_line_error(path, str(path), "invalid JSON")


def test_error_empty_file(tmp_path):
    path = write(tmp_path, "")
    assert_one_line_error(path, str(path), "empty")


def test_error_unknown_op(tmp_path):
    genes = [["sep_conv_9x9", 0]] + [list(g) for g in DARTS_V2.normal[1:]]
    path = write(tmp_path, as_json(DARTS_V2, normal=genes))
    assert_one_line_error(path, str(path), "unknown op 'sep_conv_9x9'")


def test_error_source_index_does_not_exist(tmp_path):
    genes = [list(g) for g in DARTS_V2.normal]
    genes[2] = ["sep_conv_3x3", 3]  # the second node (3) cannot read itself
    path = write(tmp_path, as_json(DARTS_V2, normal=genes))
    assert_one_line_error(path, str(path), "node 3 reads source node 3, which does not exist")


def test_error_unrestricted_source_does_not_exist(tmp_path):
    genes = [list(g) for g in UNRESTRICTED.reduce]
    genes[0] = ["max_pool_3x3", 4, 2]
    path = write(tmp_path, as_json(UNRESTRICTED, reduce=genes))
    assert_one_line_error(path, str(path), "'reduce'", "source node 4, which does not exist")


def test_error_unrestricted_source_without_inputs(tmp_path):
    genes = [list(g) for g in UNRESTRICTED.normal]
    genes[5] = ["max_pool_3x3", 4, 5]  # node 4 receives nothing in this cell
    path = write(tmp_path, as_json(UNRESTRICTED, normal=genes))
    assert_one_line_error(path, str(path), "reads node 4, which has no inputs")


def test_error_restricted_needs_two_genes_per_node(tmp_path):
    genes = [list(g) for g in DARTS_V2.reduce[:7]]
    path = write(tmp_path, as_json(DARTS_V2, reduce=genes))
    assert_one_line_error(path, str(path), "'reduce' has 7 genes", "exactly 2 per node")


def test_error_empty_cell(tmp_path):
    path = write(tmp_path, as_json(DARTS_V2, normal=[]))
    assert_one_line_error(path, str(path), "'normal' is an empty cell")


def test_error_empty_concat(tmp_path):
    path = write(tmp_path, as_json(DARTS_V2, reduce_concat=[]))
    assert_one_line_error(path, str(path), "'reduce_concat' is empty")


def test_error_concat_names_missing_node(tmp_path):
    path = write(tmp_path, as_json(UNRESTRICTED, normal_concat=[2, 3, 4, 5]))
    assert_one_line_error(path, str(path), "'normal_concat' names node(s) [4]")


def test_error_mixed_gene_kinds(tmp_path):
    genes = [list(g) for g in DARTS_V2.normal]
    genes[3] = ["sep_conv_3x3", 1, 3]
    path = write(tmp_path, as_json(DARTS_V2, normal=genes))
    assert_one_line_error(path, str(path), "mixes gene kinds")


def test_error_missing_field(tmp_path):
    fields = genotype_to_dict(DARTS_V2)
    del fields["reduce_concat"]
    path = write(tmp_path, json.dumps(fields))
    assert_one_line_error(path, str(path), "missing field(s) reduce_concat")


def test_error_malformed_gene(tmp_path):
    path = write(tmp_path, as_json(DARTS_V2, normal=[["sep_conv_3x3", "zero"]] * 8))
    assert_one_line_error(path, str(path), "malformed genes")


def test_error_not_a_json_object(tmp_path):
    path = write(tmp_path, "[1, 2, 3]")
    assert_one_line_error(path, str(path), "expected a JSON object")


def test_error_truncated_genotype_string(tmp_path):
    path = write(tmp_path, repr(DARTS_V2)[:60])
    assert_one_line_error(path, str(path), "unbalanced parentheses")


def test_error_unknown_name_lists_known_ones():
    message = assert_one_line_error("DARTS_V9", "DARTS_V9", "no such file")
    assert "DARTS_V2" in message
