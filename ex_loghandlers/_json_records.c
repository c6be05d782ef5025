/* write_json: records made by WireFields.ready() written as JSON straight from what the buffer
 * kept, with no dict made and walked for each: ``_wire``'s json and ndjson encoders, for the
 * worker's every slice of common records.
 *
 * Each record is its layout's literals (keys, commas, the values every record has) with its
 * own values between them. Values are written as orjson writes them, byte for byte, which is
 * also what the standard library's encoder writes (``ensure_ascii=False``, compact), floats
 * aside: those are orjson's own texts when ``dumps`` is given (all of a slice's floats in one
 * call), else ``float.__repr__``'s, as the standard encoder writes them. A record that is a
 * dict (a record of another kind, the Python function's fields) is written by ``dumps``, if
 * given and its values are plain (``plain_values``), as ``_wire._fast_slice`` writes it.
 *
 * A slice holding anything else (a value of another class, a float that is not finite, an int
 * beyond 64 bits, a lone surrogate, a dict without ``dumps`` or one it refuses), or no Ready
 * at all, is not written: None, and the caller encodes it the usual way, which decides what
 * such a value becomes.
 */
#include "_speedups.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

int
json_layout_init(JsonLayout *layout, PyObject *literals, PyObject *sources,
                 Py_ssize_t item_length)
{
    if (!PyTuple_Check(literals) || !PyTuple_Check(sources)
        || PyTuple_GET_SIZE(literals) != PyTuple_GET_SIZE(sources) + 1) {
        PyErr_SetString(PyExc_ValueError, "a layout is n + 1 literals around n sources");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(sources);
    for (Py_ssize_t i = 0; i <= n; i++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(literals, i))) {
            PyErr_SetString(PyExc_TypeError, "a layout's literals are bytes");
            return -1;
        }
    Py_ssize_t *copied = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (copied == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t source = PyLong_AsSsize_t(PyTuple_GET_ITEM(sources, i));
        if (source == -1 && PyErr_Occurred()) {
            PyMem_Free(copied);
            return -1;
        }
        if (source < SOURCE_SEQ || source >= item_length) {
            PyMem_Free(copied);
            PyErr_Format(PyExc_ValueError, "a layout's source %zd is out of range", source);
            return -1;
        }
        copied[i] = source;
    }
    json_layout_clear(layout);
    layout->literals = Py_NewRef(literals);
    layout->sources = copied;
    layout->n = n;
    return 0;
}

void
json_layout_clear(JsonLayout *layout)
{
    Py_CLEAR(layout->literals);
    PyMem_Free(layout->sources);
    layout->sources = NULL;
    layout->n = 0;
}

static PyObject *
value_of(Ready *record, Py_ssize_t source)
{
    switch (source) {
    case SOURCE_ARGS_TEXT:
        return record->args_text;
    case SOURCE_MESSAGE:
        return record->message;
    case SOURCE_SEQ:
        return record->seq;
    default:
        return PyTuple_GET_ITEM(record->item, source);
    }
}

/* -- the bytes written --------------------------------------------------------------------- */

/* Written straight into the bytes object returned, cut to its length at the end: the text is
 * not copied once more, which for a large message would take as much memory again. */
typedef struct {
    PyObject *bytes;       /* NULL until the first reserve() */
    char *data;            /* its buffer */
    Py_ssize_t length, capacity;
} Out;

static int
reserve(Out *out, Py_ssize_t more)
{
    if (more > PY_SSIZE_T_MAX - out->length) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t needed = out->length + more;
    if (needed <= out->capacity)
        return 0;
    Py_ssize_t capacity = out->capacity > 0 ? out->capacity : 4096;
    while (capacity < needed)
        capacity = capacity <= PY_SSIZE_T_MAX / 2 ? 2 * capacity : needed;
    if (out->bytes == NULL)
        out->bytes = PyBytes_FromStringAndSize(NULL, capacity);
    else if (_PyBytes_Resize(&out->bytes, capacity) < 0)  /* it let go of the bytes */
        out->bytes = NULL;
    if (out->bytes == NULL) {
        out->data = NULL;
        out->length = out->capacity = 0;
        return -1;
    }
    out->data = PyBytes_AS_STRING(out->bytes);
    out->capacity = capacity;
    return 0;
}

/* reserve() for a writer holding ``*p``, a place in the buffer, which it moves with it. */
static int
room_at(Out *out, char **p, Py_ssize_t more)
{
    out->length = *p - out->data;
    if (reserve(out, more) < 0)
        return -1;
    *p = out->data + out->length;
    return 0;
}

static int
put(Out *out, const char *bytes, Py_ssize_t length)
{
    if (reserve(out, length) < 0)
        return -1;
    memcpy(out->data + out->length, bytes, (size_t)length);
    out->length += length;
    return 0;
}

/* What each ASCII character becomes in a JSON string: 0 itself, 'u' \u00XX, else a backslash
 * and that character. */
static char escapes[128];

void
json_records_init(void)
{
    for (int c = 0; c < 0x20; c++)
        escapes[c] = 'u';
    escapes['\b'] = 'b';
    escapes['\t'] = 't';
    escapes['\n'] = 'n';
    escapes['\f'] = 'f';
    escapes['\r'] = 'r';
    escapes['"'] = '"';
    escapes['\\'] = '\\';
}

static char *
escaped(char *p, Py_UCS4 c)
{
    static const char hex[] = "0123456789abcdef";
    char how = escapes[c];
    *p++ = '\\';
    if (how != 'u') {
        *p++ = how;
        return p;
    }
    memcpy(p, "u00", 3);
    p[3] = hex[c >> 4];
    p[4] = hex[c & 0xF];
    return p + 5;
}

/* The index of the first character from ``i`` on that JSON escapes, or ``n``, in ASCII text:
 * eight at a time, for most texts have none. In a word of ASCII bytes, ``word - c * ONES`` sets
 * the high bit of each byte below c (and perhaps of bytes above one that is: it only says
 * where to look); the bytes equal to c are those of ``word ^ c * ONES`` below 1. */
static Py_ssize_t
plain_run(const Py_UCS1 *s, Py_ssize_t i, Py_ssize_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        uint64_t below = (word - 0x20 * ones) | ((word ^ 0x22 * ones) - ones)
                         | ((word ^ 0x5C * ones) - ones);
        if (below & highs)
            break;
    }
    while (i < n && escapes[s[i]] == 0)
        i++;
    return i;
}

/* 0, 1 if the text holds a lone surrogate (no UTF-8 for it), -1 with an error set. */
static int
put_text(Out *out, PyObject *text)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return -1;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* Room for each character's UTF-8, the most a character of this text may take; an
     * escape (at most six) makes room for itself and the rest as it comes. */
    Py_ssize_t unit = PyUnicode_IS_ASCII(text) ? 1 : kind == PyUnicode_1BYTE_KIND ? 2
                      : kind == PyUnicode_2BYTE_KIND ? 3 : 4;
    if (n > (PY_SSIZE_T_MAX - 8) / 6) {
        PyErr_NoMemory();
        return -1;
    }
    if (reserve(out, unit * n + 2) < 0)
        return -1;
    char *p = out->data + out->length;
    *p++ = '"';
    if (PyUnicode_IS_ASCII(text)) {
        const Py_UCS1 *s = data;
        Py_ssize_t start = 0, i = 0;
        while (i < n) {
            i = plain_run(s, i, n);
            if (i == n)
                break;
            memcpy(p, s + start, (size_t)(i - start));
            p += i - start;
            if (room_at(out, &p, 6 + (n - i - 1) + 1) < 0)
                return -1;
            p = escaped(p, s[i]);
            start = ++i;
        }
        memcpy(p, s + start, (size_t)(n - start));
        p += n - start;
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                if (escapes[c] == 0)
                    *p++ = (char)c;
                else if (room_at(out, &p, 6 + unit * (n - i - 1) + 1) < 0)
                    return -1;
                else
                    p = escaped(p, c);
            }
            else if (c < 0x800) {
                *p++ = (char)(0xC0 | (c >> 6));
                *p++ = (char)(0x80 | (c & 0x3F));
            }
            else if (c < 0x10000) {
                if (c >= 0xD800 && c <= 0xDFFF)
                    return 1;
                *p++ = (char)(0xE0 | (c >> 12));
                *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *p++ = (char)(0x80 | (c & 0x3F));
            }
            else {
                *p++ = (char)(0xF0 | (c >> 18));
                *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
                *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
                *p++ = (char)(0x80 | (c & 0x3F));
            }
        }
    }
    *p++ = '"';
    out->length = p - out->data;
    return 0;
}

/* 0, 1 if the int is beyond 64 bits signed (written the usual way), -1 with an error set. */
static int
put_int(Out *out, PyObject *number)
{
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return 1;
    char digits[24];
    char *end = digits + sizeof(digits), *p = end;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value
                                             : (unsigned long long)value;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--p = '-';
    return put(out, p, end - p);
}

/* -- floats -------------------------------------------------------------------------------- */

/* The texts of a slice's floats, in the order they are written: orjson's JSON of a list of
 * them, read one at a time; or, without it, float.__repr__'s, made as each is written. */
typedef struct {
    PyObject *written;     /* bytes, or NULL */
    const char *next, *end;
} FloatTexts;

static int
number_character(char c)
{
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

static int
put_float(Out *out, PyObject *number, FloatTexts *texts)
{
    if (texts->written == NULL) {
        char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(number), 'r', 0,
                                           Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL)
            return -1;
        int result = put(out, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        return result;
    }
    const char *start = texts->next, *p = start;
    while (p < texts->end && number_character(*p))
        p++;
    if (p == start || p == texts->end || (*p != ',' && *p != ']'))
        return 1;  /* not a number, or fewer texts than floats: not orjson's list */
    texts->next = p + 1;
    return put(out, start, p - start);
}

int
plain_values(PyObject *fields)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        PyTypeObject *kind = Py_TYPE(value);
        if (kind == &PyUnicode_Type || kind == &PyLong_Type || kind == &PyBool_Type
            || value == Py_None)
            continue;
        if (kind == &PyFloat_Type && isfinite(PyFloat_AS_DOUBLE(value)))
            continue;
        return 0;
    }
    return 1;
}

/* 0 with ``*count`` the number of floats of the Ready ``records``, each put in ``floats`` (if
 * not NULL: a list that long) in writing order; 1 if a record holds a value not written here,
 * or is neither a Ready nor a dict ``dumps`` writes. */
static int
floats_of(PyObject *records, PyObject *floats, PyObject *dumps, Py_ssize_t *count)
{
    *count = 0;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(records); r++) {
        PyObject *record = PyList_GET_ITEM(records, r);
        if (PyDict_CheckExact(record) && dumps != Py_None && plain_values(record))
            continue;
        if (Py_TYPE(record) != &ReadyType)
            return 1;
        const JsonLayout *layout = ((Ready *)record)->layout;
        for (Py_ssize_t i = 0; i < layout->n; i++) {
            PyObject *value = value_of((Ready *)record, layout->sources[i]);
            PyTypeObject *kind = Py_TYPE(value);
            if (kind == &PyFloat_Type) {
                if (!isfinite(PyFloat_AS_DOUBLE(value)))
                    return 1;
                if (floats != NULL) {
                    if (*count >= PyList_GET_SIZE(floats))
                        return 1;
                    PyList_SET_ITEM(floats, *count, Py_NewRef(value));
                }
                ++*count;
            }
            else if (kind != &PyUnicode_Type && kind != &PyLong_Type && kind != &PyBool_Type
                     && value != Py_None)
                return 1;
        }
    }
    return 0;
}

static int
float_texts(PyObject *records, PyObject *dumps, FloatTexts *texts)
{
    Py_ssize_t count;
    int checked = floats_of(records, NULL, dumps, &count);
    if (checked != 0 || dumps == Py_None || count == 0)
        return checked;
    PyObject *floats = PyList_New(count);
    if (floats == NULL)
        return -1;
    /* Again, to fill the list: making it may have run a finalizer that changed a dict */
    Py_ssize_t filled;
    checked = floats_of(records, floats, dumps, &filled);
    if (checked != 0 || filled != count) {
        Py_DECREF(floats);  /* slots not filled are NULL: a list lets go of those */
        return checked < 0 ? -1 : 1;
    }
    PyObject *written = PyObject_CallOneArg(dumps, floats);
    Py_DECREF(floats);
    if (written == NULL)
        return -1;
    if (!PyBytes_CheckExact(written) || PyBytes_GET_SIZE(written) < 2
        || PyBytes_AS_STRING(written)[0] != '[') {
        Py_DECREF(written);
        return 1;
    }
    texts->written = written;
    texts->next = PyBytes_AS_STRING(written) + 1;
    texts->end = PyBytes_AS_STRING(written) + PyBytes_GET_SIZE(written);
    return 0;
}

/* -- records ------------------------------------------------------------------------------- */

static int
put_value(Out *out, PyObject *value, FloatTexts *texts)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type)
        return put_text(out, value);
    if (kind == &PyLong_Type)
        return put_int(out, value);
    if (kind == &PyFloat_Type)
        return put_float(out, value, texts);
    if (value == Py_None)
        return put(out, "null", 4);
    if (value == Py_True)
        return put(out, "true", 4);
    if (value == Py_False)
        return put(out, "false", 5);
    return 1;
}

/* A dict floats_of() let by, as dumps writes it. */
static int
put_dumped(Out *out, PyObject *fields, PyObject *dumps)
{
    PyObject *written = PyObject_CallOneArg(dumps, fields);
    if (written == NULL) {  /* a key or text orjson refuses: the caller's way decides */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 1;
    }
    int result = 1;
    if (PyBytes_CheckExact(written))
        result = put(out, PyBytes_AS_STRING(written), PyBytes_GET_SIZE(written));
    Py_DECREF(written);
    return result;
}

static int
put_record(Out *out, Ready *record, FloatTexts *texts)
{
    const JsonLayout *layout = record->layout;
    for (Py_ssize_t i = 0; i <= layout->n; i++) {
        PyObject *literal = PyTuple_GET_ITEM(layout->literals, i);
        if (put(out, PyBytes_AS_STRING(literal), PyBytes_GET_SIZE(literal)) < 0)
            return -1;
        if (i == layout->n)
            break;
        int result = put_value(out, value_of(record, layout->sources[i]), texts);
        if (result != 0)
            return result;
    }
    return 0;
}

/* write_json(records, separator, dumps): the JSON of each of ``records`` (a list of Ready and
 * dicts), joined by ``separator`` (bytes); None if any of them is not written here (see the
 * top). ``dumps`` is orjson's, or None. */
PyObject *
write_json(PyObject *module, PyObject *args)
{
    PyObject *given, *separator, *dumps;
    if (!PyArg_ParseTuple(args, "O!O!O:write_json", &PyList_Type, &given, &PyBytes_Type,
                          &separator, &dumps))
        return NULL;
    Py_ssize_t first = 0;
    while (first < PyList_GET_SIZE(given)
           && Py_TYPE(PyList_GET_ITEM(given, first)) != &ReadyType)
        first++;
    if (first == PyList_GET_SIZE(given))  /* dicts alone: the caller writes them in one call */
        Py_RETURN_NONE;
    /* A list of its own: nothing dumps runs can change what floats_of saw */
    PyObject *records = PyList_GetSlice(given, 0, PyList_GET_SIZE(given));
    if (records == NULL)
        return NULL;
    FloatTexts texts = {NULL, NULL, NULL};
    int result = float_texts(records, dumps, &texts);
    Out out = {NULL, NULL, 0, 0};
    Py_ssize_t count = PyList_GET_SIZE(records);
    if (result == 0 && count < PY_SSIZE_T_MAX / 1024)
        result = reserve(&out, 640 * count);  /* a common record's JSON: about 500 bytes */
    for (Py_ssize_t r = 0; r < count && result == 0; r++) {
        if (r > 0)
            result = put(&out, PyBytes_AS_STRING(separator), PyBytes_GET_SIZE(separator));
        PyObject *record = PyList_GET_ITEM(records, r);
        if (result == 0)
            result = PyDict_CheckExact(record) ? put_dumped(&out, record, dumps)
                                               : put_record(&out, (Ready *)record, &texts);
    }
    Py_XDECREF(texts.written);
    Py_DECREF(records);
    if (result == 0 && _PyBytes_Resize(&out.bytes, out.length) == 0)
        return out.bytes;
    Py_XDECREF(out.bytes);  /* NULL if the resize failed: it let go of it */
    return result > 0 ? Py_NewRef(Py_None) : NULL;
}
