/* What _speedups.c and _json_records.c share: a record ready to be written as JSON, and how
 * its fields are laid out. */
#ifndef EX_LOGHANDLERS_SPEEDUPS_H
#define EX_LOGHANDLERS_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#endif

/* What the two files share is seen by nothing outside the module: a library loaded before it
 * with symbols of the same names does not take their place. */
#if defined(__GNUC__)
#define SHARED_HERE __attribute__((visibility("hidden")))
#else
#define SHARED_HERE
#endif

/* Where a value written between two literals comes from: an index into the record's item
 * (0 and up), or one of these. The same numbers as _wire's _ARGS_TEXT, _MESSAGE_TEXT,
 * _SEQ. */
#define SOURCE_ARGS_TEXT (-1)
#define SOURCE_MESSAGE (-2)
#define SOURCE_SEQ (-3)

/* A record's JSON object: literals[0], value of sources[0], literals[1], ..., literals[n].
 * The literals hold the keys, the commas and every value the same for all records. */
typedef struct {
    PyObject *literals;    /* tuple of n + 1 bytes */
    Py_ssize_t *sources;   /* n of them */
    Py_ssize_t n;
} JsonLayout;

/* WireFields.ready()'s record: what its fields are made of, without the dict. The texts were
 * made once, on the worker, so writing the record again (a batch split) runs no code of the
 * program's. */
typedef struct {
    PyObject_HEAD
    PyObject *maker;             /* the WireFields that made it: fields() */
    const JsonLayout *layout;    /* the maker's, alive as long as the maker is */
    PyObject *item;              /* the buffer's tuple */
    PyObject *args_text;         /* str, or None */
    PyObject *message;           /* str */
    PyObject *seq;               /* int */
} Ready;

SHARED_HERE extern PyTypeObject ReadyType;

/* 0, or -1 with an error set if ``literals`` and ``sources`` do not make a layout for items
 * of at least ``item_length`` values. */
SHARED_HERE int json_layout_init(JsonLayout *layout, PyObject *literals, PyObject *sources,
                                 Py_ssize_t item_length);
SHARED_HERE void json_layout_clear(JsonLayout *layout);

/* 1 if every value of the dict ``fields`` is a str, int, bool, None or finite float: what
 * orjson writes as the standard library's encoder does. */
SHARED_HERE int plain_values(PyObject *fields);

/* Once, before write_json is called. */
SHARED_HERE void json_records_init(void);

/* write_json(records, separator, dumps) -> bytes or None: see _json_records.c. */
SHARED_HERE PyObject *write_json(PyObject *module, PyObject *args);

#endif
