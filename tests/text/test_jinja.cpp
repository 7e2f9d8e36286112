// Jinja interpreter unit tests: one group per feature (whitespace handling, loops, scoping, expressions,
// tests, filters, methods, globals) and the errors for bad templates. Expected values follow Python's
// Jinja2 3.1 with transformers' settings (trim_blocks and lstrip_blocks on).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "text/jinja.h"

namespace iris::text {
namespace {

using ojson = nlohmann::ordered_json;

std::string R(const std::string& tmpl, const char* ctx = "{}") {
  return ChatTemplate(tmpl).render(ojson::parse(ctx));
}

// Message of the iris::Error that rendering (or parsing) throws; fails the test when nothing is thrown.
std::string error_of(const std::string& tmpl, const char* ctx = "{}") {
  try {
    ChatTemplate t(tmpl);
    t.render(ojson::parse(ctx));
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for template: " << tmpl;
  return "";
}

#define EXPECT_HAS(haystack, needle)                               \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "'" << (haystack) << "' lacks '" << (needle) << "'"

// ---- whitespace ----

TEST(JinjaWhitespace, TrimBlocksRemovesNewlineAfterBlockTag) {
  EXPECT_EQ(R("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");
  EXPECT_EQ(R("{% if true +%}\nx{% endif %}"), "\nx");  // `+%}` keeps the newline
}

TEST(JinjaWhitespace, LstripBlocksRemovesIndentBeforeBlockTags) {
  EXPECT_EQ(R("<ul>\n    {% for x in [1,2] %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>"),
            "<ul>\n    <li>1</li>\n    <li>2</li>\n</ul>");
  EXPECT_EQ(R("a\n    {{ 1 }}"), "a\n    1");                     // not before variables
  EXPECT_EQ(R("a\n    {%+ if true %}b{% endif %}"), "a\n    b");  // `{%+` opts out
  EXPECT_EQ(R("  {% if true %}y{% endif %}"), "y");               // start of template is a line start
  EXPECT_EQ(R("{{ 'x' }}  {% if true %}y{% endif %}"), "x  y");   // not after other text on the line
  EXPECT_EQ(R("a\n  {# note #}\nb"), "a\nb");                     // comments too, with trim
}

TEST(JinjaWhitespace, MinusStripsAllWhitespace) {
  EXPECT_EQ(R("a  \n  {%- if true -%}  \n  b  {%- endif %}"), "ab");
  EXPECT_EQ(R("a \n{{- 'x' -}}\n b"), "axb");
  EXPECT_EQ(R("a  {#- c -#}  b"), "ab");
}

TEST(JinjaWhitespace, OneTrailingNewlineDroppedAndCrlfNormalised) {
  EXPECT_EQ(R("hello\n"), "hello");
  EXPECT_EQ(R("hello\n\n"), "hello\n");
  EXPECT_EQ(R("a\r\nb\rc"), "a\nb\nc");
}

TEST(JinjaWhitespace, CommentsAndRaw) {
  EXPECT_EQ(R("a{# {{ ignored }} #}b"), "ab");
  EXPECT_EQ(R("{% raw %}{{ not evaluated }}{% if %}{% endraw %}"), "{{ not evaluated }}{% if %}");
}

// ---- loops ----

TEST(JinjaFor, LoopVariables) {
  EXPECT_EQ(R("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
              "{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}{{ x }};{% endfor %}"),
            "10TrueFalse332a;21FalseFalse321b;32FalseTrue310c;");
  EXPECT_EQ(R("{% for x in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a','b') }};{% "
              "endfor %}"),
            "-2-a;1-3-b;2--a;");
}

TEST(JinjaFor, ElseFilterConditionAndUnpacking) {
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %}"),
            "1,3,5,7,9");
  EXPECT_EQ(R("{% for x in range(4) if x > 10 %}x{% else %}none kept{% endfor %}"), "none kept");
  EXPECT_EQ(R("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 1, "a": 2}})"),
            "b=1;a=2;");
  EXPECT_EQ(R("{% for k in d %}{{ k }}{% endfor %}", R"({"d": {"b": 1, "a": 2}})"), "ba");
  EXPECT_EQ(R("{% for (a, b) in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}"), "3 7 ");
  EXPECT_EQ(R("{% for c in 'hé' %}[{{ c }}]{% endfor %}"), "[h][é]");
  EXPECT_EQ(
      R("{% for m in ms | selectattr('role', 'equalto', 'user') %}{{ m.content }}{% endfor %}",
        R"({"ms": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}, {"role": "user", "content": "c"}]})"),
      "ac");
  EXPECT_EQ(R("{% for x in undefined_thing %}x{% endfor %}"), "");
}

TEST(JinjaFor, BreakContinueAndNesting) {
  EXPECT_EQ(R("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% "
              "endif %}"
              "{{ x }}{% endfor %}"),
            "0134");
  EXPECT_EQ(
      R("{% for a in [1,2] %}{% set outer = loop %}{% for b in [1,2] %}{{ outer.index }}{{ loop.index }} "
        "{% endfor %}{% endfor %}"),
      "11 12 21 22 ");
  EXPECT_EQ(R("{% for a in [1,2] %}{% for b in [1,2,3] %}{% if b == 2 %}{% break %}{% endif %}{{ a }}{{ b }} "
              "{% endfor %}{% endfor %}"),
            "11 21 ");
}

// ---- scoping and assignment ----

TEST(JinjaSet, ScopingFollowsJinja) {
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"),
            "21");                                                                     // loop: local
  EXPECT_EQ(R("{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}"), "2");  // if: shared
  EXPECT_EQ(
      R("{% for i in [1, 2] %}{% if i == 1 %}{% set seen = 'yes' %}{% endif %}[{{ seen }}]{% endfor %}"),
      "[yes][]");  // each iteration starts from the outer scope
  EXPECT_EQ(R("{% set x = 'ctx shadowed' %}{{ x }}", R"({"x": "from context"})"), "ctx shadowed");
}

TEST(JinjaSet, NamespaceBlockSetAndTuples) {
  EXPECT_EQ(R("{% set ns = namespace(count=0) %}{% for i in range(4) %}{% set ns.count = ns.count + i %}{% "
              "endfor %}"
              "{{ ns.count }}"),
            "6");
  EXPECT_EQ(R("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c is defined }}"), "12False");
  EXPECT_EQ(R("{% set s %}a{{ 1 + 1 }}b{% endset %}[{{ s }}]"), "[a2b]");
  EXPECT_EQ(R("{% set s | upper %}abc{% endset %}{{ s }}"), "ABC");
  EXPECT_EQ(R("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(R("{% set t = (1, 'x') %}{{ t }} {{ t[1] }} {{ (1,) }}"), "(1, 'x') x (1,)");
}

TEST(JinjaMacro, DefaultsKeywordsRecursion) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}"
              "{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }}"),
            "Hello Bob! Hello Al? Hello Cy!");
  EXPECT_EQ(
      R("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}"
        "{{ fact(5) }}"),
      "120");
  EXPECT_EQ(R("{% macro m() %}{{ varargs|length }}{{ kwargs.k }}{% endmacro %}{{ m(1, 2, k='v') }}"), "2v");
  EXPECT_EQ(R("{% set g = 'outer' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}"), "outer");
}

TEST(JinjaMisc, FilterBlockGenerationDoAndRaiseException) {
  EXPECT_EQ(R("{% filter upper %}hello {{ 'x' }}{% endfilter %}"), "HELLO X");
  ChatTemplate t("a{% generation %}x{{ 1 }}{% endgeneration %}y{% generation %}{% endgeneration %}");
  std::vector<std::pair<size_t, size_t>> spans;
  EXPECT_EQ(t.render(ojson::object(), &spans), "ax1y");
  ASSERT_EQ(spans.size(), 1u);  // empty blocks produce no span
  EXPECT_EQ(spans[0], std::make_pair(size_t(1), size_t(3)));
  EXPECT_EQ(R("{% set l = [1] %}{% do l.append(2) %}{{ l }}"), "[1, 2]");
  try {
    R("{% if true %}{{ raise_exception('custom: ' ~ 42) }}{% endif %}");
    FAIL();
  } catch (const TemplateRaised& e) {
    EXPECT_STREQ(e.what(), "custom: 42");
  }
}

// ---- expressions ----

TEST(JinjaExpr, Literals) {
  EXPECT_EQ(
      R(R"({{ 'it\'s' }}|{{ "say \"hi\"" }}|{{ 'tab\there' }}|{{ '\u00e9\x41' }}|{{ 'back\\slash' }}|{{ '\s' }})"),
      "it's|say \"hi\"|tab\there|\xC3\xA9"
      "A|back\\slash|\\s");
  EXPECT_EQ(R("{{ 'a' 'b' }}"), "ab");
  EXPECT_EQ(
      R("{{ 42 }} {{ 1.5 }} {{ 1e3 }} {{ 1_000 }} {{ 0x1F }} {{ 0.00001 }} {{ 1e16 }} {{ 123456789.0 }}"),
      "42 1.5 1000.0 1000 31 1e-05 1e+16 123456789.0");
  EXPECT_EQ(R("{{ none }} {{ None }} {{ true }} {{ False }} {{ True }}"), "None None True False True");
  EXPECT_EQ(
      R("{{ [1, 'a', none, true, 1.0] }} {{ {'k': 'v', 'n': [1]} }} {{ [\"it's\"] }} {{ [] }} {{ {} }}"),
      "[1, 'a', None, True, 1.0] {'k': 'v', 'n': [1]} [\"it's\"] [] {}");
}

TEST(JinjaExpr, Arithmetic) {
  EXPECT_EQ(R("{{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} "
              "{{ 2 ** 10 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 + 2.0 }}"),
            "0.30000000000000004 2.5 2.0 3 -4 2 -2 1024 3.0 0.5 3.0");
  EXPECT_EQ(
      R("{{ 2 + 3 * 4 }} {{ (2 + 3) * 4 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ -(3) }}"),
      "14 20 64 4 5 -3");
  EXPECT_EQ(
      R("{{ 'a' ~ 1 ~ none ~ undefined_x }} {{ 'ab' + 'cd' }} {{ '-' * 3 }} {{ 2 * 'ab' }} {{ [1] + [2] }} "
        "{{ true + 1 }}"),
      "a1None abcd --- abab [1, 2] 2");
}

TEST(JinjaExpr, ComparisonsLogicAndMembership) {
  EXPECT_EQ(
      R("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ true == 1 }} "
        "{{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} {{ 2 >= 2 }} {{ 'x' == none }}"),
      "True False True True True True True True True False");
  EXPECT_EQ(
      R("{{ '' or 'x' }} {{ 'a' and 'b' }} {{ 0 and 1 }} {{ not 0 }} {{ not 'a' }} {{ not x is defined }}"),
      "x b 0 True False True");
  EXPECT_EQ(R("{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} "
              "{{ 3 not in [3] }} {{ 'a' in undefined_y }}"),
            "True True True True False False");
  EXPECT_EQ(R("{{ 'y' if 1 > 0 else 'n' }}{{ 'y' if 0 else 'n' }}[{{ 'y' if false }}]{{ 'a' if false else "
              "'b' if true else 'c' }}"),
            "yn[]b");
}

TEST(JinjaExpr, AttributeSubscriptAndUndefined) {
  const char* ctx = R"({"m": {"role": "user", "content": "hi"},
                        "ms": [{"role": "a"}, {"role": "b"}, {"role": "c"}]})";
  EXPECT_EQ(R("{{ m['role'] }} {{ m.content }} {{ ms[0].role }} {{ ms[-1]['role'] }} {{ ms.1.role }}", ctx),
            "user hi a c b");
  EXPECT_EQ(
      R("[{{ m.missing }}|{{ m.missing.deeper }}|{{ nothing.x.y }}|{{ nothing[0] }}|{{ ms[10] }}]", ctx),
      "[||||]");
  EXPECT_EQ(R("{{ m.missing is defined }} {{ nothing is undefined }} {{ m.role is defined }} {{ ms[10] is "
              "defined }}",
              ctx),
            "False True True False");
  EXPECT_EQ(R("{% if nothing %}t{% else %}f{% endif %}{% if nothing.attr %}t{% else %}f{% endif %}", ctx),
            "ff");
  EXPECT_EQ(R("{{ [none, nothing] }}[{{ ms[0, 1] }}]", ctx),
            "[None, Undefined][]");  // repr vs str of undefined
}

TEST(JinjaExpr, SlicesAndUtf8) {
  EXPECT_EQ(R("{{ [1,2,3,4][1:] }} {{ [1,2,3,4][::-1] }} {{ [1,2,3,4][:2] }} {{ [1,2,3,4][-2:] }} {{ "
              "[1,2,3,4][::2] }} "
              "{{ [1,2,3,4][3:1:-1] }} {{ [1,2][5:] }}"),
            "[2, 3, 4] [4, 3, 2, 1] [1, 2] [3, 4] [1, 3] [4, 3] []");
  EXPECT_EQ(R("{{ 'héllo'[1:3] }} {{ 'héllo'[::-1] }} {{ 'héllo'[1] }} {{ 'héllo'[-1] }}"), "él olléh é o");
  EXPECT_EQ(R("{{ 'héllo'|length }} {{ '日本語'|length }} {{ '\U0001F600a'|length }} {{ 'héllo'|upper }}"),
            "5 3 2 HÉLLO");
}

// ---- tests ----

TEST(JinjaTests, TypeAndValueTests) {
  const char* ctx = R"({"s": "x", "n": 1, "f": 1.5, "l": [1], "d": {"a": 1}, "z": null, "t": true})";
  EXPECT_EQ(
      R("{{ s is string }},{{ n is number }},{{ f is number }},{{ n is integer }},{{ f is float }},"
        "{{ l is sequence }},{{ d is mapping }},{{ l is mapping }},{{ z is none }},{{ u is defined }},"
        "{{ u is undefined }},{{ s is defined }},{{ t is true }},{{ t is false }},{{ t is boolean }},"
        "{{ n is not string }},{{ l is iterable }},{{ n is iterable }},{{ z is not none }},{{ t is number }},"
        "{{ t is integer }}",
        ctx),
      "True,True,True,True,True,True,True,False,True,False,True,True,True,False,True,True,True,False,False,"
      "True,False");
  EXPECT_EQ(
      R("{{ 6 is divisibleby 3 }},{{ 7 is divisibleby(3) }},{{ 3 is odd }},{{ 4 is even }},{{ 'a' is eq 'a' "
        "}},"
        "{{ 'a' is equalto('b') }},{{ 2 is lt 3 }},{{ 3 is ge 3 }},{{ 'abc' is lower }},{{ 'ABC' is upper }},"
        "{{ range is callable }},{{ 1 is in [1, 2] }},{{ none is sameas none }},{{ 'x' is sameas 'x' }}"),
      "True,False,True,True,True,False,True,True,True,True,True,True,True,True");
}

// ---- filters ----

TEST(JinjaFilters, Strings) {
  EXPECT_EQ(
      R("{{ '  a b \n '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'hELLo wORLD'|capitalize }}|"
        "{{ 'hello big-world (x)'|title }}|{{ \"they're\"|title }}|{{ 'AbC'|lower }}|{{ 'aBc'|upper }}"),
      "a b|a|Hello world|Hello Big-World (X)|They're|abc|ABC");
  EXPECT_EQ(R("{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'ab'|replace('', '-') }}"),
            "bbb bba -a-b-");
  EXPECT_EQ(R("{{ '<b>&\"\\''|escape }} {{ '<b>'|e }} {{ '<b>'|safe }} {{ 1|string ~ [1]|string }}"),
            "&lt;b&gt;&amp;&#34;&#39; &lt;b&gt; <b> 1[1]");
  EXPECT_EQ(
      R("{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ 'ab'|center(6) }}|{{ 'abc'|center(6) }}|"
        "{{ 'hello big world'|wordcount }}"),
      "a\n  b\n\n  c|  a\n  b|  ab  | abc  |3");
  EXPECT_EQ(R("{{ '%s-%d-%.2f-%5s|%-3s|'|format('a', 3, 1.5, 'x', 'y') }}{{ '%s/%s' % ('a', 'b') }} {{ "
              "'%d%%' % 5 }}"),
            "a-3-1.50-    x|y  |a/b 5%");
}

TEST(JinjaFilters, Sequences) {
  EXPECT_EQ(R("{{ [1,2,3]|length }}{{ 'abc'|count }}{{ {'a': 1}|length }}{{ nothing|length }}"), "3310");
  EXPECT_EQ(R("{{ [1,2,3]|first }}{{ [1,2,3]|last }}{{ 'abc'|first }}{{ 'abc'|last }}[{{ []|first }}]"),
            "13ac[]");
  EXPECT_EQ(R("{{ [1,2,3]|join(', ') }}|{{ ['a','b']|join }}|{{ ms|join(',', attribute='role') }}",
              R"({"ms": [{"role": "a"}, {"role": "b"}]})"),
            "1, 2, 3|ab|a,b");
  EXPECT_EQ(R("{{ 'ab'|list }} {{ {'k': 1}|list }} {{ [1,2,3]|reverse|list }} {{ 'abc'|reverse }}"),
            "['a', 'b'] ['k'] [3, 2, 1] cba");
  EXPECT_EQ(R("{{ [3,1,2]|sort }} {{ ['b','A','c']|sort }} {{ [3,1,2]|sort(reverse=true) }} "
              "{{ ms|sort(attribute='role', reverse=true)|map(attribute='role')|join }} "
              "{{ ['b','A','c']|sort(case_sensitive=true) }}",
              R"({"ms": [{"role": "b"}, {"role": "c"}, {"role": "a"}]})"),
            "[1, 2, 3] ['A', 'b', 'c'] [3, 2, 1] cba ['A', 'b', 'c']");
  EXPECT_EQ(R("{{ ['a','A','b','a']|unique|list }} {{ ['a','A']|unique(case_sensitive=true)|list }}"),
            "['a', 'b'] ['a', 'A']");
  EXPECT_EQ(
      R("{{ [3,1,2]|min }}{{ [3,1,2]|max }}{{ [1,2,3]|sum }}{{ -3|abs }}{{ ['B','a']|max }} "
        "{{ [[1,2],[3]]|map('length')|list }} {{ [1,2,3]|batch(2)|list }} {{ {'b': 1, 'A': 2}|dictsort }}"),
      "1363B [2, 1] [[1, 2], [3]] [('A', 2), ('b', 1)]");
  EXPECT_EQ(R("{% for k, v in {'x': 1, 'y': 2}|items %}{{ k }}{{ v }}{% endfor %}{{ nothing|items|list }}"),
            "x1y2[]");
}

TEST(JinjaFilters, SelectMapAndDefault) {
  const char* ctx =
      R"({"c": [{"type": "image"}, {"type": "text", "text": "t1"}, {"type": "text", "text": "t2", "x": null}]})";
  EXPECT_EQ(R("{{ c|selectattr('type', 'equalto', 'text')|map(attribute='text')|join(',') }}|"
              "{{ c|rejectattr('type', '==', 'text')|list|length }}|{{ c|selectattr('text', "
              "'defined')|list|length }}|"
              "{{ c|selectattr('x', 'none')|list|length }}|{{ c|selectattr('text')|list|length }}|"
              "{{ c|rejectattr('text')|list }}",
              ctx),
            "t1,t2|1|2|1|2|[{'type': 'image'}]");
  EXPECT_EQ(R("{{ ['a','b']|map('upper')|join }}|{{ c|map(attribute='text', default='-')|join(',') }}|"
              "{{ range(6)|select('odd')|list }}|{{ range(6)|reject('odd')|list }}|{{ [0, 1, '', "
              "'a']|select|list }}",
              ctx),
            "AB|-,t1,t2|[1, 3, 5]|[0, 2, 4]|[1, 'a']");
  EXPECT_EQ(
      R("{{ u|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ none|default('d') }}|"
        "{{ u|d('x') }}|{{ u|default }}"),
      "d||d|None|x|");
}

TEST(JinjaFilters, Numbers) {
  EXPECT_EQ(R("{{ '42'|int }} {{ '3.7'|int }} {{ 3.9|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ ' -12 '|int }} "
              "{{ 'ff'|int(base=16) }} {{ '2.5'|float }} {{ 3|float }} {{ 'nope'|float }} {{ true|int }}"),
            "42 3 3 0 7 -12 255 2.5 3.0 0.0 1");
  EXPECT_EQ(R("{{ 2.5|round }} {{ 3.5|round }} {{ 3.14159|round(2) }} {{ 2.675|round(2) }} {{ 1.5|round(0, "
              "'floor') }} "
              "{{ 1.2|round(0, 'ceil') }} {{ 3|round }} {{ -0.5|round }}"),
            "2.0 4.0 3.14 2.67 1.0 2.0 3 -0.0");
}

TEST(JinjaFilters, ToJson) {
  EXPECT_EQ(R(R"({{ {'a': [1, 2.5, none, true], 'b': 'é"\n\u0001'}|tojson }})"),
            "{\"a\": [1, 2.5, null, true], \"b\": \"\xC3\xA9\\\"\\n\\u0001\"}");
  EXPECT_EQ(R("{{ {'a': [1, {}], 'b': []}|tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
  EXPECT_EQ(R("{{ 'é\U0001F600'|tojson(ensure_ascii=true) }}"), "\"\\u00e9\\ud83d\\ude00\"");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ [1, 2]|tojson(separators=(',', ':')) }}"),
            "{\"a\": 2, \"b\": 1} [1,2]");
  // Key order: ordered_json keeps the caller's order; nlohmann::json stores keys sorted.
  ChatTemplate t("{{ d|tojson }}");
  EXPECT_EQ(t.render(ojson::parse(R"({"d": {"b": 1, "a": 2}})")), "{\"b\": 1, \"a\": 2}");
  EXPECT_EQ(t.render(nlohmann::json::parse(R"({"d": {"b": 1, "a": 2}})")), "{\"a\": 2, \"b\": 1}");
}

// ---- methods and globals ----

TEST(JinjaMethods, StringMethods) {
  EXPECT_EQ(
      R("{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|"
        "{{ '\nx\n'.strip('\n') }}|{{ ' a b  c '.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', "
        "1) }}|"
        "{{ 'a,b,c'.rsplit(',', 1) }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('x', 'lo')) }}|"
        "{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ \"they're bill\".title() }}|{{ 'hELLO'.capitalize() }}|"
        "{{ 'a-b-c'.replace('-', '+', 1) }}|{{ 'hello'.find('l') }}|{{ ', '.join(['a', 'b']) }}|"
        "{{ '{} and {name}'.format(1, name='x') }}|{{ 'a b  c'.split(' ') }}"),
      "x|a|x|x|x|['a', 'b', 'c']|['a', 'b', '', 'c']|['a', 'b,c']|['a,b', 'c']|True|True|HIhi|They'Re Bill|"
      "Hello|a+b-c|2|a, b|1 and x|['a', 'b', '', 'c']");
  // With a split limit the remainder keeps its whitespace on the far side, as in Python.
  EXPECT_EQ(
      R("{{ '  a  b  '.split(none, 1) }}|{{ '  a  b  c '.rsplit(none, 1) }}|{{ 'a\nb\r\nc'.splitlines() }}"),
      "['a', 'b  ']|['  a  b', 'c']|['a', 'b', 'c']");
}

TEST(JinjaMethods, DictAndListMethods) {
  const char* ctx = R"({"d": {"a": 1, "b": 2}})";
  EXPECT_EQ(R("{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.get('a') }} {{ "
              "d.get('zz', 'def') }} "
              "{{ d.get('zz') }}",
              ctx),
            "['a', 'b'] [1, 2] [('a', 1), ('b', 2)] 1 def None");
  EXPECT_EQ(R("{% set ns = namespace(items=[]) %}{% for i in range(3) %}{% set _ = ns.items.append(i * 2) %}"
              "{% endfor %}{{ ns.items }} {{ ns.items.append(9) }} {{ ns.items|length }}"),
            "[0, 2, 4] None 4");
  EXPECT_EQ(R("{% set l = [3, 1] %}{% set _ = l.extend([5]) %}{{ l.pop() }}{{ l.index(1) }}{{ l.count(3) "
              "}}{{ l }}"),
            "511[3, 1]");
}

TEST(JinjaGlobals, RangeDictNamespaceStrftime) {
  EXPECT_EQ(R("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1)['a'] }} "
              "{{ namespace(x=1).x }}"),
            "[0, 1, 2] [1, 3, 5] [5, 3, 1] 1 1");
  EXPECT_EQ(R("{{ strftime_now('%Y')|length }}"), "4");
  EXPECT_HAS(error_of("{{ range(1000000) }}"), "range too big");
}

// ---- errors ----

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  std::string e = error_of("{% if true %}never closed");
  EXPECT_HAS(e, "syntax error at line 1");
  EXPECT_HAS(e, "'if' block opened at line 1, column 1 is not closed");
  EXPECT_HAS(error_of("line1\n{{ x }}\n{% for x in y %}\nbody"), "'for' block opened at line 3");
  e = error_of("{{ x | nosuchfilter }}");
  EXPECT_HAS(e, "no filter named 'nosuchfilter'");
  EXPECT_HAS(e, "line 1, column 8");
  EXPECT_HAS(error_of("a\n  {{ x is nosuchtest }}"), "line 2, column 11: no test named 'nosuchtest'");
  EXPECT_HAS(error_of("{% frobnicate %}"), "unknown tag 'frobnicate'");
  EXPECT_HAS(error_of("{% include 'x.j2' %}"), "not supported");
  EXPECT_HAS(error_of("{{ 'abc }}"), "unterminated string");
  EXPECT_HAS(error_of("{{ (1 + 2 }}"), "unexpected '}', expected ')'");
  EXPECT_HAS(error_of("{% for x in y %}{% endif %}{% endfor %}"), "unexpected 'endif'");
  EXPECT_HAS(error_of("{% break %}"), "outside of a for loop");
  EXPECT_HAS(error_of("{# never closed"), "missing end of comment");
  EXPECT_HAS(error_of("{{ 1 + }}"), "expected an expression");
  EXPECT_HAS(error_of("{{ x "), "'{{' is not closed");
  EXPECT_HAS(error_of("{% if x %}a{% else %}b{% else %}c{% endif %}"), "unexpected 'else'");
  EXPECT_HAS(error_of("{{ '\\x4' }}"), "truncated");
  EXPECT_HAS(error_of("{{ 007 }}"), "leading zeros");
  EXPECT_HAS(error_of("{{ x | é }}"), "unexpected character 'é'");
  EXPECT_HAS(error_of("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}"),
             "nested too deeply");
}

TEST(JinjaErrors, RuntimeErrorsNameLine) {
  std::string e = error_of("a\n{{ 1 + 'x' }}");
  EXPECT_HAS(e, "line 2");
  EXPECT_HAS(e, "unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_HAS(error_of("{{ 1 / 0 }}"), "division by zero");
  EXPECT_HAS(error_of("{{ nope() }}"), "'nope' is undefined");
  EXPECT_HAS(error_of("{{ foo + 1 }}"), "'foo' is undefined");
  EXPECT_HAS(error_of("{{ 'a' < 1 }}"), "'<' not supported");
  EXPECT_HAS(error_of("{% set x = 1 %}{% set x.y = 2 %}"), "not a namespace");
  EXPECT_HAS(error_of("{% for a, b in [1, 2] %}{% endfor %}"), "cannot unpack");
  EXPECT_HAS(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "nested more than");
  EXPECT_HAS(error_of("{{ 'abc'.nosuchmethod() }}"), "called as a function");
  EXPECT_HAS(error_of("{{ [1]|join(attribute=1, x=2) }}"), "unexpected keyword argument 'x'");
  EXPECT_HAS(error_of("{{ x|tojson }}"), "not JSON serializable");
  EXPECT_HAS(error_of("{{ 1 }}", "[1, 2]"), "must be a JSON object");
  // A list that contains itself cannot be printed, compared or serialised, but must not crash.
  EXPECT_HAS(error_of("{% set l = [] %}{% do l.append(l) %}{{ l }}"), "contains itself");
  EXPECT_HAS(error_of("{% set l = [] %}{% do l.append(l) %}{{ l == l }}"), "contains itself");
  EXPECT_HAS(error_of("{% set l = [] %}{% do l.append(l) %}{{ l|tojson }}"), "contains itself");
}

}  // namespace
}  // namespace iris::text
