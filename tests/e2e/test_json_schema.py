"""plumb_json_schema_to_gbnf against the `jsonschema` package: for each schema below, the
grammar plumb makes must accept a JSON text exactly when jsonschema says its value is valid.

Instances come from hypothesis-jsonschema (valid ones, where it can build a strategy), from each
case's own lists, and from mutations of those (a value swapped for another type, a key dropped or
added, a string or number nudged past a bound). Each is written compactly, with json.dumps'
default spacing, with indent=2, and without ASCII escaping, and matched whole with
plumb_grammar_match.

Where plumb is deliberately stricter than JSON Schema (docs/structured-output.md, "JSON Schema"):
object members are written in the schema's order, so instances are put in that order first; an
integer is spelled without a fraction or exponent; formats follow the documented grammars (the
oracle's own format checks are looser and are only required to agree in one direction); patterns
follow ECMA-262, so the oracle runs them translated to Python's dialect."""
import copy
import ctypes
import json
import os
import re
import warnings

import jsonschema
import pytest

import hypothesis_jsonschema as hjs
from hypothesis import HealthCheck, given, settings

from plumbffi import declare_grammar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OK, INVALID_ARG, UNSUPPORTED, RANGE = 0, -1, -5, -8


# ---- ctypes ----

class Plumb:
    def __init__(self):
        path = os.environ.get("PLUMB_LIB", os.path.join(ROOT, "build", "libplumb.so"))
        if not os.path.isabs(path):
            path = os.path.join(ROOT, path)
        if not os.path.exists(path):
            pytest.fail(f"{path} does not exist; build it first (make build)")
        L = declare_grammar(ctypes.CDLL(path))
        self.L = L
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]

    def to_gbnf(self, schema):
        """(status, GBNF text or the error message)."""
        b = schema if isinstance(schema, bytes) else json.dumps(schema).encode()
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        st = self.L.plumb_json_schema_to_gbnf(b, len(b), ctypes.byref(out), ctypes.byref(n))
        if st:
            assert not out.value and n.value == 0
            return st, self.L.plumb_last_error().decode()
        text = ctypes.string_at(out, n.value).decode()
        self.libc.free(out)
        return st, text

    def grammar(self, text):
        b = text.encode()
        g = ctypes.c_void_p()
        st = self.L.plumb_grammar_parse(b, len(b), None, None, ctypes.byref(g))
        assert st == OK, f"plumb_grammar_parse: {self.L.plumb_last_error().decode()}\n{text}"
        return g

    def complete(self, g, text):
        b = text.encode("utf-8")
        viable, complete = ctypes.c_bool(), ctypes.c_bool()
        st = self.L.plumb_grammar_match(g, b, len(b), ctypes.byref(viable), ctypes.byref(complete))
        assert st == OK, self.L.plumb_last_error().decode()
        return complete.value


@pytest.fixture(scope="module")
def plumb():
    return Plumb()


# ---- the oracle ----

ECMA_SPACE = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"


def ecma_to_python(p):
    """The ECMA-262 pattern subset in Python's dialect: \\d \\w \\s as ECMA defines them, `.`
    without line terminators, `$` only at the very end."""
    out, i, in_class = [], 0, False
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            e = p[i + 1]
            body = {"d": "0-9", "w": "A-Za-z0-9_", "s": ECMA_SPACE}.get(e)
            if body is not None:
                out.append(body if in_class else f"[{body}]")
            elif e in "DWS" and not in_class:
                out.append("[^" + {"D": "0-9", "W": "A-Za-z0-9_", "S": ECMA_SPACE}[e] + "]")
            else:
                out.append(p[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            if p[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
        elif c == ".":
            out.append("[^\\n\\r\\u2028\\u2029]")
        elif c == "$":
            out.append("\\Z")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _pattern(validator, patrn, instance, schema):
    if validator.is_type(instance, "string") and not re.search(ecma_to_python(patrn), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")


EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                   r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+\Z")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")

formats = jsonschema.Draft202012Validator.FORMAT_CHECKER
strict_formats = jsonschema.FormatChecker(formats=())
strict_formats.checks("email")(lambda s: not isinstance(s, str) or bool(EMAIL.match(s)))
strict_formats.checks("uuid")(lambda s: not isinstance(s, str) or bool(UUID.match(s)))
for name in ("date", "time", "date-time"):
    base = formats.checkers[name][0]
    strict_formats.checks(name, raises=formats.checkers[name][1])(
        lambda s, base=base: not isinstance(s, str) or (s.isascii() and not s.endswith("\n") and base(s)))

Oracle = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


def openapi_to_jsonschema(s):
    """nullable: true as the type list JSON Schema spells it."""
    if isinstance(s, dict):
        s = {k: openapi_to_jsonschema(v) for k, v in s.items()}
        if s.pop("nullable", False) and "type" in s:
            t = s["type"] if isinstance(s["type"], list) else [s["type"]]
            s["type"] = t + ["null"]
        return s
    if isinstance(s, list):
        return [openapi_to_jsonschema(v) for v in s]
    return s


def valid(schema, instance, checker=strict_formats):
    return Oracle(openapi_to_jsonschema(schema), format_checker=checker).is_valid(instance)


# ---- the order plumb writes members in ----

def resolve(root, s):
    while isinstance(s, dict) and "$ref" in s and len([k for k in s if k not in ("$ref", "description")]) == 0:
        ref = s["$ref"]
        s = root
        for seg in ref[2:].split("/") if ref != "#" else []:
            s = s[seg.replace("~1", "/").replace("~0", "~")]
    return s


def prop_order(root, s, inst):
    """Declared keys in the order plumb's grammar writes them (json_schema_plain.c's merge:
    own properties, then $ref, allOf, anyOf/oneOf members), the branch of an anyOf/oneOf being
    the first the instance is valid against."""
    s = resolve(root, s)
    if not isinstance(s, dict):
        return [], []
    keys = list(s.get("properties", {}))
    req = list(s.get("required", []))

    def add(sub):
        k2, r2 = prop_order(root, sub, inst)
        keys.extend(k for k in k2 if k not in keys)
        req.extend(r for r in r2 if r not in req)

    if "$ref" in s:
        add({"$ref": s["$ref"]})
    for sub in s.get("allOf", []):
        add(sub)
    for kw in ("anyOf", "oneOf"):
        for sub in s.get(kw, []):
            if valid(dict(root, **{k: v for k, v in resolve(root, sub).items() if k != "$defs"})
                     if isinstance(resolve(root, sub), dict) else resolve(root, sub), inst, formats):
                add(sub)
                break
    return keys, req


def canon(root, s, inst):
    """inst with every object's members in plumb's order."""
    s = resolve(root, s)
    if isinstance(inst, dict):
        keys, req = prop_order(root, s, inst) if isinstance(s, dict) else ([], [])
        order = keys + [r for r in req if r not in keys]
        first = [k for k in order if k in inst]
        rest = [k for k in inst if k not in order]
        props = {}

        def gather(x):
            x = resolve(root, x)
            if not isinstance(x, dict):
                return
            for k, v in x.get("properties", {}).items():
                props.setdefault(k, []).append(v)
            for kw in ("allOf", "anyOf", "oneOf"):
                for sub in x.get(kw, []):
                    gather(sub)
            if "$ref" in x:
                gather(resolve(root, {"$ref": x["$ref"]}))
        gather(s)
        extra = s.get("additionalProperties", True) if isinstance(s, dict) else True
        return {k: canon(root, props[k][0] if k in props else extra, inst[k]) for k in first + rest}
    if isinstance(inst, list):
        items = s.get("items", True) if isinstance(s, dict) else True
        prefix = s.get("prefixItems", []) if isinstance(s, dict) else []
        if isinstance(s, dict) and "anyOf" in s:
            for sub in s["anyOf"]:
                if valid(dict(root, **resolve(root, sub)) if isinstance(resolve(root, sub), dict) else sub, inst,
                         formats):
                    return canon(root, sub, inst)
        return [canon(root, prefix[i] if i < len(prefix) else items, v) for i, v in enumerate(inst)]
    return inst


def spellings(inst):
    """(text, whole): the instance written several ways; `whole` when the grammar must take it
    if it is valid. Property names, enum and const strings are matched in their plain spelling
    only (as json.dumps(ensure_ascii=False) writes them), so a text with escaped non-ASCII is only
    checked one way: taken only if valid."""
    out = [(json.dumps(inst, separators=(",", ":"), ensure_ascii=False), True),
           (json.dumps(inst, ensure_ascii=False), True), (json.dumps(inst), False),
           (json.dumps(inst, separators=(",", ":")), False)]
    if depth(inst) <= 9:
        out.append((json.dumps(inst, indent=2, ensure_ascii=False), True))
    return out


def depth(v):
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def integral_floats(v):
    if isinstance(v, float):
        return v == int(v) if v == v and abs(v) != float("inf") else True
    if isinstance(v, dict):
        return any(integral_floats(x) for x in v.values())
    if isinstance(v, list):
        return any(integral_floats(x) for x in v)
    return False


# ---- instances ----

def generated(schema, n=40):
    """Valid instances from hypothesis-jsonschema, or none where it cannot build a strategy."""
    out = []
    try:
        strategy = hjs.from_schema(openapi_to_jsonschema(schema))
    except Exception:
        return out

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collect()
    except Exception:
        pass
    return out


FILLERS = [None, True, 0, -1, 7, 2.5, "", "x", "2024-02-30", [], [1], {}, {"zz": 1}]


def mutations(inst):
    """Nearby values: each leaf and member replaced, dropped or added to."""
    out = []
    if isinstance(inst, dict):
        for k in list(inst):
            d = dict(inst)
            del d[k]
            out.append(d)
            for m in mutations(inst[k])[:6]:
                out.append(dict(inst, **{k: m}))
        out.append(dict(inst, zz_extra=1))
    elif isinstance(inst, list):
        if inst:
            out.append(inst[:-1])
            out.append(inst + [inst[-1]])
            for i, v in enumerate(inst[:3]):
                for m in mutations(v)[:4]:
                    out.append(inst[:i] + [m] + inst[i + 1:])
        out.append(inst + [None])
    elif isinstance(inst, str):
        out += [inst + "a", inst[:-1], inst + "\n", inst.upper(), "\u00e9" + inst, inst + "\U0001F600", inst + '"\\']
    elif isinstance(inst, bool) or inst is None:
        pass
    elif isinstance(inst, int):
        out += [inst + 1, inst - 1, -inst, inst * 10]
    elif isinstance(inst, float):
        out += [inst + 0.5, -inst, inst * 1e10]
    out += [f for f in FILLERS if type(f) is not type(inst) or f != inst][:6]
    return out


# ---- the cases: (name, schema, valid instances, invalid instances) ----

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

TREE = {
    "$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
                                                       "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                       "required": ["value"], "additionalProperties": False}},
    "$ref": "#/$defs/node",
}

CASES = [
    ("any", {}, [1, "a", None, [1, {"a": []}], {"x": {"y": [True]}}], []),
    ("true", True, [0, "s", {"a": 1}], []),
    ("string", {"type": "string"}, ["", "héllo", "a\"b\\c\n\t\u0001", "\U0001F600"], [1, None, []]),
    ("integer", {"type": "integer"}, [0, -0, 5, -123456789012], [1.5, "1", None]),
    ("number", {"type": "number"}, [0, 1.5, -2e-7, 1e300, -0.0], ["1", True]),
    ("boolean", {"type": "boolean"}, [True, False], [0, "true"]),
    ("null", {"type": "null"}, [None], [0, False]),
    ("type list", {"type": ["string", "integer", "null"]}, ["a", 3, None], [1.5, True, []]),
    ("object any", {"type": "object"}, [{}, {"a": 1, "b": [None]}], [[], "x"]),
    ("array any", {"type": "array"}, [[], [1, "a", {}]], [{}, 1]),
    ("person", PERSON, [{"name": "Ann", "age": 30}, {"name": "B", "age": 0, "email": "b@x.org", "tags": ["a"]}],
     [{"name": "", "age": 3}, {"name": "Ann"}, {"name": "Ann", "age": 151}, {"name": "A", "age": 1, "x": 1}]),
    ("optional props", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                                                         "c": {"type": "boolean"}}},
     [{}, {"a": 1}, {"b": "x"}, {"c": True}, {"a": 1, "c": False}, {"a": 1, "b": "", "c": True, "d": None}], []),
    ("required middle", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                                                          "c": {"type": "boolean"}},
                         "required": ["b"], "additionalProperties": False},
     [{"b": "x"}, {"a": 1, "b": "x"}, {"b": "x", "c": True}, {"a": 2, "b": "", "c": False}], [{}, {"a": 1}]),
    ("additional schema", {"type": "object", "properties": {"id": {"type": "integer"}},
                           "additionalProperties": {"type": "string"}},
     [{"id": 1, "x": "y"}, {"k": "v", "l": ""}], [{"id": "1"}, {"x": 1}]),
    ("required undeclared", {"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}},
     [{"k": 1}, {"k": 2, "j": 3}], [{}, {"k": "x"}]),
    ("keys like declared", {"type": "object", "properties": {"ab": {"type": "integer"}, "abc": {"type": "null"}},
                            "additionalProperties": {"type": "boolean"}},
     [{"ab": 1}, {"abc": None}, {"a": True}, {"abcd": False}, {"b": True}, {"": True}],
     [{"ab": None}, {"abc": 1}, {"a": 1}]),
    ("nested", {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "number"}},
                                         "required": ["c"]}}}, "required": ["b"]}}, "required": ["a"]},
     [{"a": {"b": []}}, {"a": {"b": [{"c": 1}, {"c": 2.5, "d": 0}]}}], [{"a": {}}, {"a": {"b": [{}]}}]),
    ("enum", {"enum": ["red", "green", 3, None, True, [1, 2], {"k": "v"}, 2.5]},
     ["red", "green", 3, None, True, [1, 2], {"k": "v"}, 2.5], ["blue", 4, False, [2, 1]]),
    ("enum typed", {"type": "string", "enum": ["a", "b", 1]}, ["a", "b"], [1, "c"]),
    ("const", {"const": {"a": [1, "x\"y"], "b": None}}, [{"a": [1, "x\"y"], "b": None}], [{"a": [1], "b": None}]),
    ("const string", {"const": "héllo \"w\"\n"}, ["héllo \"w\"\n"], ["hello"]),
    ("items", {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 4},
     [[1], [1, 2, 3, 4]], [[], [0], [1, 2, 3, 4, 5]]),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                     "items": {"type": "boolean"}},
     [[], ["a"], ["a", 1], ["a", 1, True, False]], [[1], ["a", "b"], ["a", 1, 2]]),
    ("tuple closed", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "null"}], "items": False,
                      "minItems": 2}, [["a", None]], [["a"], ["a", None, None]]),
    ("minmax int", {"type": "integer", "minimum": -1234, "maximum": 56789},
     [-1234, -1000, -1, 0, 9, 10, 99, 100, 56789, 56788, 9999], [-1235, 56790, 100000, -10000]),
    ("exclusive int", {"type": "integer", "exclusiveMinimum": 9, "exclusiveMaximum": 101}, [10, 50, 100],
     [9, 101, 0]),
    ("min only int", {"type": "integer", "minimum": 37}, [37, 99, 100, 12345678], [36, 0, -40]),
    ("max only int", {"type": "integer", "maximum": -25}, [-25, -26, -100, -99999], [-24, 0, 25]),
    ("float bounds int", {"type": "integer", "minimum": 1.5, "maximum": 7.5}, [2, 7], [1, 8]),
    ("number >= 0", {"type": "number", "minimum": 0}, [0, 0.0, 1.5, 3e5, 1e-9], [-1, -0.5, -1e-9]),
    ("number > 0", {"type": "number", "exclusiveMinimum": 0}, [1, 0.001, 2e3], [0, -1, 0.0]),
    ("number < 0", {"type": "number", "exclusiveMaximum": 0}, [-1, -0.25], [0, 1]),
    ("pattern anchored", {"type": "string", "pattern": "^[A-Z]{3}-\\d{2,4}$"}, ["ABC-12", "XYZ-1234"],
     ["abc-12", "ABC-1", "ABC-12345", "xABC-12"]),
    ("pattern search", {"type": "string", "pattern": "ab+c"}, ["abc", "xxabbbcyy"], ["ac", "ab"]),
    ("pattern alternation", {"type": "string", "pattern": "^(cat|dog)s?$|^fish"}, ["cat", "dogs", "fishy"],
     ["cats!", "bird"]),
    ("pattern classes", {"type": "string", "pattern": "^[^\\s@]+@[\\w.-]+\\.(?:com|org)$"},
     ["a@b.com", "x.y@z-w.org"], ["a b@c.com", "a@b.net"]),
    ("pattern escapes", {"type": "string", "pattern": "^\\x41\\u00e9\\.\\*\\\\\"[\\t\\n]?$"},
     ["Aé.*\\\"", "Aé.*\\\"\t"], ["Ae.*\\\""]),
    ("pattern dot", {"type": "string", "pattern": "^a.c$"}, ["abc", "a\u00e9c", "a\U0001F600c"], ["a\nc", "ac"]),
    ("pattern length", {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
     ["ab", "abcde"], ["a", "abcdef", "AB"]),
    ("pattern nullable groups", {"type": "string", "pattern": "^(a?b?)*c$"}, ["c", "abc", "bac", "aabbc"],
     ["ca", "d"]),
    ("length", {"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "abc", "\U0001F600\U0001F600", "é\n"],
     ["a", "abcd"]),
    ("format date", {"type": "string", "format": "date"}, ["2024-02-29", "2023-12-31", "0001-01-01", "2000-02-29"],
     ["2023-02-29", "1900-02-29", "2024-13-01", "2024-04-31", "0000-01-01", "24-01-01"]),
    ("format time", {"type": "string", "format": "time"}, ["12:34:56Z", "23:59:59.123+05:30", "00:00:00z"],
     ["24:00:00Z", "12:34:56", "12:60:00Z"]),
    ("format date-time", {"type": "string", "format": "date-time"},
     ["2024-01-01T00:00:00Z", "1999-12-31t23:59:59.5-08:00"], ["2024-01-01 00:00:00Z", "2024-01-32T00:00:00Z"]),
    ("format uuid", {"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"],
     ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g"]),
    ("format email", {"type": "string", "format": "email"}, ["a@b.co", "first.last+tag@sub.example.org"],
     ["a@b", "@b.co", "a b@c.de", "a@-b.co"]),
    ("anyOf", {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer", "minimum": 10}]},
     ["", "ab", 10, 99], ["abc", 9, None]),
    ("oneOf disjoint", {"oneOf": [{"type": "boolean"}, {"type": "object", "properties": {"x": {"const": 1}},
                                                         "required": ["x"]}]},
     [True, {"x": 1}], [{"x": 2}, None]),
    ("allOf objects", {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                 {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     [{"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": None}], [{"a": 1}, {"b": "x"}, {"a": "1", "b": "x"}]),
    ("allOf closed", {"allOf": [{"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                                {"properties": {"a": {"minimum": 3}, "b": {}}}]},
     [{}, {"a": 3}, "s", 4], [{"a": 2}, {"b": 1}]),
    ("allOf with anyOf", {"type": "object", "allOf": [{"properties": {"kind": {"enum": ["a", "b"]}},
                                                       "required": ["kind"]},
                                                      {"anyOf": [{"properties": {"n": {"type": "integer"}}},
                                                                 {"properties": {"s": {"type": "string"}}}]}]},
     [{"kind": "a"}, {"kind": "b", "n": 1}], [{"kind": "c"}, {}]),
    ("ref defs", {"definitions": {"pos": {"type": "integer", "minimum": 1}},
                  "type": "object", "properties": {"x": {"$ref": "#/definitions/pos"},
                                                   "y": {"$ref": "#/definitions/pos"}}},
     [{"x": 1, "y": 2}, {}], [{"x": 0}]),
    ("ref recursive", TREE, [{"value": 1}, {"value": 1, "children": [{"value": 2, "children": []}]}],
     [{"value": 1, "children": [{}]}, {"children": []}]),
    ("ref root", {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
                                                   "v": {"type": "string"}}, "required": ["next"],
                  "additionalProperties": False},
     [{"next": None}, {"next": {"next": None, "v": "x"}}], [{"next": {}}, {}]),
    ("ref with siblings", {"$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer"}}}},
                           "$ref": "#/$defs/base", "required": ["id"]}, [{"id": 1}], [{}, {"id": "x"}]),
    ("nullable", {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}, "required": ["a"]},
     [{"a": None}, {"a": "x"}], [{"a": 1}, {}]),
    ("annotations", {"title": "T", "description": "d", "$comment": "c", "examples": [1], "default": 1,
                     "deprecated": False, "type": "integer", "readOnly": True}, [1], ["1"]),
    ("false member", {"type": "object", "properties": {"a": False}}, [{}, {"b": 1}], [{"a": 1}]),
]


@pytest.mark.parametrize("name,schema,good,bad", CASES, ids=[c[0] for c in CASES])
def test_schema_matches_oracle(plumb, name, schema, good, bad):
    st, text = plumb.to_gbnf(schema)
    assert st == OK, text
    g = plumb.grammar(text)
    try:
        for v in good:
            assert valid(schema, v), f"case lists {v!r} as valid but jsonschema disagrees"
        for v in bad:
            assert not valid(schema, v), f"case lists {v!r} as invalid but jsonschema disagrees"
        pool = list(good) + list(bad) + generated(schema)
        seen, checked = set(), 0
        for base in list(pool):
            for inst in [base] + mutations(base):
                key = json.dumps(inst, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                want = valid(schema, inst)
                inst = canon(schema, schema, inst)
                for text_form, whole in spellings(inst):
                    got = plumb.complete(g, text_form)
                    if got:  # plumb never takes what the schema refuses
                        assert want, f"{name}: grammar accepts invalid {text_form!r}"
                    elif want and whole and not integral_floats(inst):  # nor refuses what it allows
                        assert False, f"{name}: grammar refuses valid {text_form!r}\n{text}"
                    checked += 1
        assert checked > 0
    finally:
        plumb.L.plumb_grammar_free(g)


def test_format_grammars_imply_jsonschema_formats(plumb):
    """The format grammars are within what jsonschema's own format checks accept."""
    for fmt, samples in [("email", ["a@b.co", "x.y+z@q-r.example"]), ("uuid", ["123e4567-e89b-12d3-a456-426614174000"]),
                         ("date-time", ["2024-02-29T23:59:59.999+14:00"]), ("time", ["00:00:00Z"])]:
        for s in samples:
            assert valid({"type": "string", "format": fmt}, s, formats)


def test_oneof_is_anyof(plumb):
    """oneOf is treated as anyOf: an instance that fits two members is accepted (documented)."""
    st, text = plumb.to_gbnf({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]})
    assert st == OK, text
    g = plumb.grammar(text)
    assert plumb.complete(g, "5") and not valid({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]}, 5)
    plumb.L.plumb_grammar_free(g)


def test_whitespace_is_bounded(plumb):
    st, text = plumb.to_gbnf({"type": "object"})
    g = plumb.grammar(text)
    assert plumb.complete(g, "{\n" + " " * 20 + "\"a\": 1}")
    assert not plumb.complete(g, "{\n" + " " * 21 + "\"a\": 1}")
    assert not plumb.complete(g, " {}") and not plumb.complete(g, "{} ")
    plumb.L.plumb_grammar_free(g)


def test_names_and_constants_take_their_plain_spelling_only(plumb):
    """Property names and constants are matched as json.dumps(ensure_ascii=False) writes them (a
    model offered every escaped spelling of a name can wander off into them); string values
    without a constant still take every spelling."""
    st, text = plumb.to_gbnf({"type": "object", "properties": {"aé": {"const": "x/\U0001F600\"\n"}, "s": {"type": "string"}},
                              "required": ["aé", "s"], "additionalProperties": False})
    assert st == OK, text
    g = plumb.grammar(text)
    for form in ['{"aé":"x/\U0001F600\\"\\n","s":"\\u0078\\/\\ud83d\\ude00"}',
                 '{"aé": "x/\U0001F600\\"\\n", "s": "plain"}']:
        assert plumb.complete(g, form), form
    for form in ['{"\\u0061\\u00E9":"x/\U0001F600\\"\\n","s":""}', '{"aé":"\\u0078/\U0001F600\\"\\n","s":""}',
                 '{"aé":"x/\\ud83d\\ude00\\"\\n","s":""}', '{"aé":"x/\U0001F600\\u0022\\n","s":""}',
                 '{"ae":"x/\U0001F600\\"\\n","s":""}']:
        assert not plumb.complete(g, form), form
    plumb.L.plumb_grammar_free(g)


UNSUPPORTED_CASES = [
    ({"type": "object", "properties": {"a": {"patternProperties": {"x": {}}}}}, "patternProperties", "/properties/a"),
    ({"not": {"type": "string"}}, "not", "/"),
    ({"type": "array", "items": {"type": "string"}, "contains": {"const": "x"}}, "contains", "/"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems", "/"),
    ({"type": "object", "minProperties": 1}, "minProperties", "/"),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames", "/"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired", "/"),
    ({"if": {}, "then": {}}, "if", "/"),
    ({"type": "number", "multipleOf": 2}, "multipleOf", "/"),
    ({"anyOf": [{"type": "string", "format": "ipv4"}]}, "ipv4", "/anyOf/0"),
    ({"type": "number", "minimum": 1.5}, "minimum", "/"),
    ({"$ref": "http://example.com/s.json"}, "remote $ref", "/"),
    ({"type": "string", "pattern": "(?=a)b"}, "lookaround", "/pattern"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference", "/pattern"),
    ({"type": "string", "pattern": "\\bword"}, "word boundary", "/pattern"),
    ({"type": "string", "pattern": "a^b"}, "'^'", "/"),
    ({"type": "string", "pattern": "a|bc", "maxLength": 4}, "maxLength", "/"),
    ({"type": "array", "items": [{"type": "string"}]}, "prefixItems", "/"),
    ({"properties": {"x": {"$dynamicRef": "#a"}}}, "$dynamicRef", "/properties/x"),
    ({"$defs": {"a": {"type": "object", "unevaluatedProperties": False}}, "$ref": "#/$defs/a"},
     "unevaluatedProperties", "/$defs/a"),
]


@pytest.mark.parametrize("schema,word,pointer", UNSUPPORTED_CASES, ids=[c[1] for c in UNSUPPORTED_CASES])
def test_unsupported_keywords(plumb, schema, word, pointer):
    st, msg = plumb.to_gbnf(schema)
    assert st == UNSUPPORTED, (st, msg)
    assert word in msg and f"at {pointer}" in msg, msg


MALFORMED = [
    b"", b"{", b"[1, 2]", b"3", b'{"type": "strin"}', b'{"type": 3}', b'{"properties": []}',
    b'{"required": "a"}', b'{"minLength": -1}', b'{"maxItems": 1.5}', b'{"minimum": "0"}', b'{"anyOf": []}',
    b'{"a": 1, "a": 2}', b'{"properties": {"x": {"type": "string", "type": "integer"}}}', b'{"$ref": "#/nowhere"}',
    b'{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}',
    b'{"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"}',
    b'{"type": "string", "pattern": "a("}', b'{"type": "string", "pattern": "[z-a]"}', b'{"enum": 1}',
    b'{"const": "a\\u0000b"}', b'{"type": "string"} x', b'\xff{}', b"false", b'{"type": "integer", "minimum": 5, "maximum": 4}',
    b'{"exclusiveMinimum": true}',
]


@pytest.mark.parametrize("schema", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_schemas(plumb, schema):
    st, msg = plumb.to_gbnf(schema)
    assert st == INVALID_ARG, (st, msg)
    assert msg


def test_caps(plumb):
    deep = {"type": "object"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    st, msg = plumb.to_gbnf(deep)
    assert st == RANGE and "64" in msg, msg
    st, msg = plumb.to_gbnf({"type": "string", "maxLength": 20000})
    assert st == RANGE and "10000" in msg, msg
    st, msg = plumb.to_gbnf({"type": "integer", "minimum": 1e300})
    assert st == RANGE, msg
    big = {"type": "object", "properties": {f"p{i}" + "x" * 200: {"enum": [f"v{i}" + "y" * 300]} for i in range(2000)}}
    st, msg = plumb.to_gbnf(big)
    assert st == RANGE and "1048576" in msg, msg
    # allOf members that double at each step: the work cap holds
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(40)}
    defs["d40"] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    st, msg = plumb.to_gbnf({"$defs": defs, "$ref": "#/$defs/d0"})
    assert st == RANGE, msg
