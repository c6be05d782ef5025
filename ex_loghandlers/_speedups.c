/* The application thread's share of every common record, in C: ``common_record`` and
 * ``FastHandle``, ``ExHTTPHandler.handle()`` from the record to the buffer (further down).
 *
 * ``common_record`` is ``_queued.python_common_record`` for the records that need no decision
 * of its own: a
 * plain ``LogRecord`` whose attributes are logging's in logging's order, a ``str`` template
 * whose conversions ``_queued`` already knows, arguments that are short ints, floats, bools,
 * None or strings, and no exception or stack. For those it returns what the Python function
 * returns, the same tuple and size, or None where it returns None. Any other record it hands
 * to the Python function (``fallback``), which decides: so the two can only agree.
 *
 * ``configure()`` gives it ``_queued``'s constants once, at import.
 *
 * On the worker: ``WireFields``, a common record's fields (``_queued.wire_fields_maker``), and
 * its ``Ready`` records, which ``write_json`` (_json_records.c) writes as JSON with no dict.
 */
#include "_speedups.h"


/* What the Python code expects of this module (_native.LAYOUT): a build left from another
 * version of the package is not used. Raised with every change to what either side calls. */
#define LAYOUT 4

static PyObject *record_type;      /* logging.LogRecord */
static PyObject *stdlib_get_message;  /* LogRecord.getMessage as logging defines it, or None */
static PyObject *common_keys;      /* tuple: the attributes of every record, logging's order */
static PyObject *common_end;       /* (_COMMON,) */
static PyObject *no_args_end;      /* (_NO_ARGS,) */
static PyObject *known_conversions; /* dict: template -> tuple of one-character str, or None */
static PyObject *native_types;     /* frozenset of the types a number's argument may have */
static PyObject *fallback;         /* _queued's common_record in Python */
static PyObject *get_message_name; /* "getMessage" */
static Py_ssize_t args_index, msg_index, exc_info_index, exc_text_index, stack_info_index;
static long long snapshot_overhead, arg_overhead, number_text, wide_text_check;
static int configured;
/* The interpreter whose objects the statics above hold: the one that imported the module
 * first. Another (a sub-interpreter) gets the pure Python package (see usable()). */
static PyInterpreterState *owner;

/* True if this interpreter may use the module: the first to ask, and only it. */
static PyObject *
usable(PyObject *module, PyObject *unused)
{
    PyInterpreterState *here = PyInterpreterState_Get();
    if (owner == NULL)
        owner = here;
    return PyBool_FromLong(owner == here);
}

/* 0 if this interpreter owns the module's state, -1 with an error set if another does. */
static int
owned_here_or_error(void)
{
    if (owner == PyInterpreterState_Get())
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "_speedups belong to another interpreter");
    return -1;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *type, *getmsg, *keys, *c_end, *n_end, *known, *native, *fb;
    long long so, ao, nt, wtc;
    if (owned_here_or_error() < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "OOO!O!O!O!OOLLLL", &type, &getmsg, &PyTuple_Type, &keys,
                          &PyTuple_Type, &c_end, &PyTuple_Type, &n_end, &PyDict_Type, &known,
                          &native, &fb, &so, &ao, &nt, &wtc))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    Py_ssize_t found[5] = {-1, -1, -1, -1, -1};
    const char *names[5] = {"args", "msg", "exc_info", "exc_text", "stack_info"};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i);
        for (int j = 0; j < 5; j++)
            if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, names[j]) == 0)
                found[j] = i;
    }
    for (int j = 0; j < 5; j++)
        if (found[j] < 0) {
            PyErr_Format(PyExc_ValueError, "common keys lack %s", names[j]);
            return NULL;
        }
    /* Indexes into the values without args, as _queued's _OTHER_KEYS */
    for (int j = 1; j < 5; j++)
        if (found[j] > found[0])
            found[j] -= 1;
    Py_XSETREF(record_type, Py_NewRef(type));
    Py_XSETREF(stdlib_get_message, Py_NewRef(getmsg));
    Py_XSETREF(common_keys, Py_NewRef(keys));
    Py_XSETREF(common_end, Py_NewRef(c_end));
    Py_XSETREF(no_args_end, Py_NewRef(n_end));
    Py_XSETREF(known_conversions, Py_NewRef(known));
    Py_XSETREF(native_types, Py_NewRef(native));
    Py_XSETREF(fallback, Py_NewRef(fb));
    if (get_message_name == NULL
        && (get_message_name = PyUnicode_InternFromString("getMessage")) == NULL)
        return NULL;
    args_index = found[0];
    msg_index = found[1];
    exc_info_index = found[2];
    exc_text_index = found[3];
    stack_info_index = found[4];
    snapshot_overhead = so;
    arg_overhead = ao;
    number_text = nt;
    wide_text_check = wtc;
    configured = 1;
    Py_RETURN_NONE;
}

static int
is_ascii(PyObject *text)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0)
        return -1;
#endif
    return PyUnicode_IS_ASCII(text) ? 1 : 0;
}

/* The size of a record with arguments, or -1: not common (None), -2: let Python decide,
 * -3: an error is set. */
static long long
size_with_args(PyObject *msg, PyObject *args)
{
    PyObject *conversions = PyDict_GetItemWithError(known_conversions, msg);
    if (conversions == NULL)
        return PyErr_Occurred() ? -3 : -2;
    if (conversions == Py_None)
        return -1;
    if (!PyTuple_CheckExact(conversions))
        return -2;
    Py_ssize_t count = PyTuple_GET_SIZE(args);
    if (PyTuple_GET_SIZE(conversions) != count)
        return -1;
    int ascii = is_ascii(msg);
    if (ascii < 0)
        return -3;
    long long length = PyUnicode_GET_LENGTH(msg), numbers = 0;
    int wide = !ascii;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *arg = PyTuple_GET_ITEM(args, i);
        PyTypeObject *kind = Py_TYPE(arg);
        if (kind == &PyUnicode_Type) {
            PyObject *conversion = PyTuple_GET_ITEM(conversions, i);
            if (!PyUnicode_CheckExact(conversion) || PyUnicode_GET_LENGTH(conversion) != 1)
                return -2;
            Py_UCS4 c = PyUnicode_READ_CHAR(conversion, 0);
            if (c == 's')
                length += PyUnicode_GET_LENGTH(arg);
            else if (c == 'r' || c == 'a')
                length += 10 * PyUnicode_GET_LENGTH(arg);
            else
                return -1;
            int arg_ascii = is_ascii(arg);
            if (arg_ascii < 0)
                return -3;
            if (!arg_ascii)
                wide = 1;
        }
        else if (kind == &PyLong_Type) {
            int overflow;
            (void)PyLong_AsLongLongAndOverflow(arg, &overflow);
            if (overflow)
                return -2;  /* maybe beyond 2**512: Python compares */
            if (PyErr_Occurred())
                return -3;
            numbers += 1;
        }
        else {
            if (Py_TYPE(kind) != &PyType_Type)  /* a metaclass's hash may fail: not common */
                return -1;
            int native = PySet_Contains(native_types, (PyObject *)kind);
            if (native < 0)
                return -3;
            if (!native)
                return -1;
            numbers += 1;
        }
    }
    long long size = snapshot_overhead + arg_overhead * count;
    size += wide ? 4 * (length + number_text * numbers) : length;
    return size;
}

/* Attribute names, interned once. */
static PyObject *n_filters, *n_closed, *n_unlisted, *n_close_in_emit, *n_thread,
    *n_buffer_closed, *n_bytes, *n_accepted_total, *n_flag, *n_doorbell, *n_ring,
    *n_emit_prepared, *n_move_aside_on, *n_fast_handle_failed, *n_emit, *n_tb_frame, *n_f_code,
    *n_co_filename, *n_tb_lineno, *n_co_name, *n_f_globals, *n_tb_next;

static int
intern_names(void)
{
#define NAME(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    NAME(n_filters, "filters") NAME(n_closed, "_closed") NAME(n_unlisted, "_unlisted")
    NAME(n_close_in_emit, "_close_in_emit") NAME(n_thread, "thread")
    NAME(n_buffer_closed, "closed") NAME(n_bytes, "_bytes")
    NAME(n_accepted_total, "accepted_total") NAME(n_flag, "_flag")
    NAME(n_doorbell, "doorbell") NAME(n_ring, "_ring")
    NAME(n_emit_prepared, "_emit_prepared") NAME(n_move_aside_on, "_move_aside_on")
    NAME(n_fast_handle_failed, "_fast_handle_failed") NAME(n_emit, "emit")
    NAME(n_tb_frame, "tb_frame") NAME(n_f_code, "f_code") NAME(n_co_filename, "co_filename")
    NAME(n_tb_lineno, "tb_lineno") NAME(n_co_name, "co_name") NAME(n_f_globals, "f_globals")
    NAME(n_tb_next, "tb_next")
#undef NAME
    return 0;
}

/* 1 if attribute ``name`` of ``obj`` is true, 0 if false, -1 on an error. */
static int
attribute_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    int truth = value == Py_True ? 1 : value == Py_False || value == Py_None ? 0
        : PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* -- an exception's capture ------------------------------------------------------------------
 *
 * The record of a logger.exception() as _queued._with_exception makes it, for the plain case:
 * an exception with neither cause nor context, no notes (where traceback shows them), not a
 * group nor a SyntaxError, and no "Did you mean" to work out; no sys.tracebacklimit; a class
 * whose metaclass is type and that has BaseException's args, __cause__, __context__,
 * __suppress_context__, __class__ and attribute lookup, and no __notes__ of its own. Most
 * logged exceptions are that. Any other goes to the Python function, which decides, before
 * any code of the program has run: what the capture reads of such an exception runs none.
 * The program's code runs as in Python, in Python's order: the exception's repr() (unless the
 * worker writes it from its arguments), its str(), then linecache.lazycache. The exception is
 * then looked at again as before they ran. Only such code that raises, that makes the exception other than plain
 * (gives it a cause, a context or notes, changes its class, sets sys.tracebacklimit), or a
 * str() that gives a str subclass with a length or truth of its own, hands the exception to
 * Python after it ran: it runs again there. */

static PyObject *style_cache;         /* _mapping._style_cache: [(__init__, style)] */
static PyObject *traceback_exception; /* the TracebackException class _mapping formats with */
static PyObject *linecache_module;
static PyObject *inline_mark;         /* _queued._INLINE: where exc_info was */
static PyObject *exception_end;       /* _queued._EXCEPTION */
static long long frame_overhead;
static PyObject *plain_kind;          /* _mapping._PLAIN */
static int exceptions_configured;

static PyObject *n_init, *n_notes, *n_group, *n_suggesting, *n_cause, *n_context,
    *n_dunder_notes, *n_suppress_context, *n_repr, *n_args, *n_cache, *n_lazycache,
    *n_module, *n_qualname, *n_name, *s_builtins, *s_main, *s_empty, *n_class, *n_len, *n_bool;

static int
intern_exception_names(void)
{
#define NAME(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1;
    NAME(n_init, "__init__") NAME(n_notes, "notes") NAME(n_group, "group")
    NAME(n_suggesting, "suggesting") NAME(n_cause, "__cause__") NAME(n_context, "__context__")
    NAME(n_dunder_notes, "__notes__") NAME(n_suppress_context, "__suppress_context__")
    NAME(n_repr, "__repr__") NAME(n_args, "args") NAME(n_cache, "cache")
    NAME(n_lazycache, "lazycache") NAME(n_module, "__module__") NAME(n_qualname, "__qualname__")
    NAME(n_name, "__name__") NAME(s_builtins, "builtins") NAME(s_main, "__main__")
    NAME(s_empty, "") NAME(n_class, "__class__") NAME(n_len, "__len__") NAME(n_bool, "__bool__")
#undef NAME
    return 0;
}

static PyObject *
configure_exceptions(PyObject *module, PyObject *args)
{
    PyObject *cache, *tbe, *lc, *inl, *end, *kind;
    long long fo;
    if (owned_here_or_error() < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "O!OOOOOL:configure_exceptions", &PyList_Type, &cache,
                          &tbe, &lc, &inl, &end, &kind, &fo))
        return NULL;
    Py_XSETREF(style_cache, Py_NewRef(cache));
    Py_XSETREF(traceback_exception, Py_NewRef(tbe));
    Py_XSETREF(linecache_module, Py_NewRef(lc));
    Py_XSETREF(inline_mark, Py_NewRef(inl));
    Py_XSETREF(exception_end, Py_NewRef(end));
    Py_XSETREF(plain_kind, Py_NewRef(kind));
    frame_overhead = fo;
    exceptions_configured = 1;
    Py_RETURN_NONE;
}

/* The frame walk of _mapping.python_frames_of: for each frame of traceback tb in turn its
 * file name, line number and function name, flat in one tuple; a file not in linecache's
 * cache is given to lazycache with the frame's globals, as traceback does, so that the worker
 * finds its lines. A traceback's fields are read from it as its attributes give them (the
 * line number by its attribute where it is worked out when asked); anything else that
 * stands for one, by its attributes. */
static PyObject *
frames_tuple(PyObject *tb, PyObject *cache, PyObject *lazycache)
{
    PyObject *frames = PyList_New(0);
    if (frames == NULL)
        return NULL;
    int cache_is_dict = PyDict_CheckExact(cache);
    Py_INCREF(tb);
    while (tb != Py_None) {
        PyObject *frame = NULL, *code = NULL, *filename = NULL, *lineno = NULL, *name = NULL,
            *next = NULL;
        int ok;
        if (Py_TYPE(tb) == &PyTraceBack_Type) {
            PyTracebackObject *here = (PyTracebackObject *)tb;
            frame = Py_NewRef((PyObject *)here->tb_frame);
            code = (PyObject *)PyFrame_GetCode(here->tb_frame);
            filename = Py_NewRef(((PyCodeObject *)code)->co_filename);
            name = Py_NewRef(((PyCodeObject *)code)->co_name);
            lineno = here->tb_lineno >= 0 ? PyLong_FromLong(here->tb_lineno)
                : PyObject_GetAttr(tb, n_tb_lineno);
            ok = lineno != NULL;
        }
        else
            ok = (frame = PyObject_GetAttr(tb, n_tb_frame)) != NULL
                && (code = PyObject_GetAttr(frame, n_f_code)) != NULL
                && (filename = PyObject_GetAttr(code, n_co_filename)) != NULL
                && (lineno = PyObject_GetAttr(tb, n_tb_lineno)) != NULL
                && (name = PyObject_GetAttr(code, n_co_name)) != NULL;
        ok = ok && PyList_Append(frames, filename) == 0 && PyList_Append(frames, lineno) == 0
            && PyList_Append(frames, name) == 0;
        if (ok) {
            int cached = cache_is_dict ? PyDict_Contains(cache, filename)
                : PySequence_Contains(cache, filename);
            if (cached < 0)
                ok = 0;
            else if (!cached) {
                PyObject *globals = PyObject_GetAttr(frame, n_f_globals);
                PyObject *done = globals == NULL ? NULL
                    : PyObject_CallFunctionObjArgs(lazycache, filename, globals, NULL);
                ok = done != NULL;
                Py_XDECREF(globals);
                Py_XDECREF(done);
            }
        }
        if (ok) {
            if (Py_TYPE(tb) == &PyTraceBack_Type) {
                PyTracebackObject *here = (PyTracebackObject *)tb;
                next = Py_NewRef(here->tb_next == NULL ? Py_None : (PyObject *)here->tb_next);
            }
            else
                ok = (next = PyObject_GetAttr(tb, n_tb_next)) != NULL;
        }
        Py_XDECREF(frame);
        Py_XDECREF(code);
        Py_XDECREF(filename);
        Py_XDECREF(lineno);
        Py_XDECREF(name);
        Py_DECREF(tb);
        if (!ok) {
            Py_DECREF(frames);
            return NULL;
        }
        tb = next;
    }
    Py_DECREF(tb);
    PyObject *flat = PyList_AsTuple(frames);
    Py_DECREF(frames);
    return flat;
}

/* frames_of(tb, cache, lazycache): _mapping.python_frames_of in C. */
static PyObject *
frames_of(PyObject *module, PyObject *args)
{
    PyObject *tb, *cache, *lazycache;
    if (!PyArg_ParseTuple(args, "OOO:frames_of", &tb, &cache, &lazycache))
        return NULL;
    return frames_tuple(tb, cache, lazycache);
}

/* 1 if str() gave a text whose length Python reads as this code does: a str, or of a
 * subclass with str's __len__ and no __bool__ (its truth) of its own; 0 if not. */
static int
plain_text(PyObject *text)
{
    if (PyUnicode_CheckExact(text))
        return 1;
    return _PyType_Lookup(Py_TYPE(text), n_len) == _PyType_Lookup(&PyUnicode_Type, n_len)
        && _PyType_Lookup(Py_TYPE(text), n_bool) == NULL;
}

/* An error the Python capture would catch (its USER_ERRORS): cleared, and 2 (Python
 * captures, and says what failed); any other (KeyboardInterrupt) stays set: -1. */
static int
hand_to_python(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_GeneratorExit)) {
        PyErr_Clear();
        return 2;
    }
    return -1;
}

/* 1 if class cls has attribute name as BaseException has it (none of its own, which reading
 * the attribute would run or give), 0 if not. A lookup in the classes' dicts: no code runs. */
static int
inherited(PyObject *cls, PyObject *name)
{
    return _PyType_Lookup((PyTypeObject *)cls, name)
        == _PyType_Lookup((PyTypeObject *)PyExc_BaseException, name);
}

/* 1 if the exception has neither cause nor context, nor notes where traceback shows them; 0 if
 * it has; read from the exception itself (its class has these attributes as BaseException has
 * them), so no code runs. */
static int
unlinked(PyObject *exc, int notes_shown)
{
    PyBaseExceptionObject *base = (PyBaseExceptionObject *)exc;
    if ((base->cause != NULL && base->cause != Py_None)
        || (base->context != NULL && base->context != Py_None))
        return 0;
    if (!notes_shown || base->dict == NULL)
        return 1;
    PyObject *notes = PyDict_GetItemWithError(base->dict, n_dunder_notes);  /* borrowed */
    if (notes == NULL)
        return PyErr_Occurred() ? -1 : 1;
    return notes == Py_None;
}

/* The traceback module's style as _mapping worked it out for its __init__ now (a new
 * reference), or NULL without an error if Python is to work it out again. */
static PyObject *
current_style(void)
{
    if (PyList_GET_SIZE(style_cache) != 1)
        return NULL;
    PyObject *cached = Py_NewRef(PyList_GET_ITEM(style_cache, 0));
    PyObject *style = NULL;
    if (PyTuple_CheckExact(cached) && PyTuple_GET_SIZE(cached) == 2) {
        PyObject *init = PyObject_GetAttr(traceback_exception, n_init);
        if (init == NULL)
            PyErr_Clear();
        else if (init == PyTuple_GET_ITEM(cached, 0))
            style = Py_NewRef(PyTuple_GET_ITEM(cached, 1));
        Py_XDECREF(init);
    }
    Py_DECREF(cached);
    return style;
}

/* 1 if traceback's style shows notes, 0 if not, -1 with an error set; *plain set to 0 if the
 * exception is one Python is to capture: a group, or one whose message gets a suggestion. */
static int
style_of(PyObject *exc, int *plain)
{
    PyObject *style = current_style();
    if (style == NULL) {
        *plain = 0;
        return 0;
    }
    PyObject *group = NULL, *suggesting = NULL;
    int notes = attribute_true(style, n_notes);
    if (notes < 0 || (group = PyObject_GetAttr(style, n_group)) == NULL
        || (suggesting = PyObject_GetAttr(style, n_suggesting)) == NULL) {
        notes = -1;
        goto done;
    }
    int is = 0;
    if (group != Py_None)
        is = PyObject_IsInstance(exc, group);
    if (is == 0 && !PyTuple_Check(suggesting))
        is = 1;  /* not a style this code knows */
    else if (is == 0 && PyTuple_GET_SIZE(suggesting) > 0)
        is = PyObject_IsInstance(exc, suggesting);
    if (is < 0)
        notes = -1;
    else if (is > 0)
        *plain = 0;
done:
    Py_DECREF(style);
    Py_XDECREF(group);
    Py_XDECREF(suggesting);
    return notes;
}

/* 1 if the C capture takes this exception, 0 if Python is to, -1 with an error set. Looks at
 * its class and at it without running any code of the program's (see inherited, unlinked). */
static int
plain_exception(PyObject *exc_type, PyObject *exc, PyObject *tb, int *notes_shown)
{
    if (!PyType_Check(exc_type) || Py_TYPE(exc_type) != &PyType_Type
        || (PyObject *)Py_TYPE(exc) != exc_type || !PyExceptionInstance_Check(exc)
        || (tb != Py_None && Py_TYPE(tb) != &PyTraceBack_Type)
        || PyType_IsSubtype((PyTypeObject *)exc_type, (PyTypeObject *)PyExc_SyntaxError))
        return 0;
    if (((PyBaseExceptionObject *)exc)->args == NULL
        || Py_TYPE(exc)->tp_getattro != PyObject_GenericGetAttr  /* a __getattribute__ */
        || !inherited(exc_type, n_cause) || !inherited(exc_type, n_context)
        || !inherited(exc_type, n_suppress_context) || !inherited(exc_type, n_args)
        || !inherited(exc_type, n_class)
        || _PyType_Lookup((PyTypeObject *)exc_type, n_dunder_notes) != NULL)
        return 0;  /* attributes of its own: Python reads them, as often as it does */
    if ((((PyTypeObject *)exc_type)->tp_flags & Py_TPFLAGS_HEAPTYPE)
        && !PyUnicode_CheckExact(((PyHeapTypeObject *)exc_type)->ht_qualname))
        return 0;  /* f"{module}.{qualname}" would call its __format__ */
    PyObject *limit = PySys_GetObject("tracebacklimit");  /* borrowed; NULL without error */
    if (limit != NULL && limit != Py_None)
        return 0;
    int plain = 1;
    *notes_shown = style_of(exc, &plain);
    if (*notes_shown < 0)
        return -1;
    return plain ? unlinked(exc, *notes_shown) : 0;
}

/* As _mapping._deferred_repr: 1 with *deferred (a new reference) set to the exception's
 * arguments if the worker is to write its repr() from them, 0 if its repr() is to be written
 * now, -1 on an error. Its class has args as BaseException has them (plain_exception): a
 * tuple. */
static int
deferred_repr(PyObject *exc_type, PyObject *exc, PyObject **deferred)
{
    if (!inherited(exc_type, n_repr))
        return 0;
    PyObject *args = ((PyBaseExceptionObject *)exc)->args;
    if (args == NULL || !PyTuple_CheckExact(args))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        PyTypeObject *kind = Py_TYPE(PyTuple_GET_ITEM(args, i));
        int native = Py_TYPE(kind) != &PyType_Type ? 0
            : PySet_Contains(native_types, (PyObject *)kind);
        if (native <= 0)
            return native;
    }
    *deferred = Py_NewRef(args);
    return 1;
}

/* A tuple that holds nothing the garbage collector may track is left alone by it from now on,
 * as its first collection would decide: only what it does not track at all, and tuples it
 * stopped tracking (a dict it does not track now may hold a cycle later). */
static void
untrack_if_flat(PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))
            return;
    }
    if (PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
}

/* The head of _queued._inline_parts: what exc_info_text needs of the exception's class (the
 * class itself if built in), as a new reference. */
static PyObject *
class_part(PyObject *exc_type, int deferred)
{
    if (!PyObject_GC_IsTracked(exc_type))
        return Py_NewRef(exc_type);
    PyObject *text = PyObject_Repr(exc_type);
    if (text == NULL)
        return NULL;
    PyObject *name = deferred ? PyObject_GetAttr(exc_type, n_name) : Py_NewRef(s_empty);
    if (name == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *part = PyTuple_Pack(2, text, name);
    Py_DECREF(text);
    Py_DECREF(name);
    if (part != NULL)
        untrack_if_flat(part);  /* two strings, most often: the first collection would */
    return part;
}

/* qualified_name's "module.QualName" (just QualName for builtins and __main__). */
static PyObject *
type_name_of(PyObject *module, PyObject *qualname)
{
    if (module == Py_None || PyUnicode_Compare(module, s_builtins) == 0
        || PyUnicode_Compare(module, s_main) == 0)
        return PyErr_Occurred() ? NULL : Py_NewRef(qualname);
    return PyUnicode_FromFormat("%U.%U", module, qualname);
}

/* The capture's parts (_queued._inline_parts of capture_exception's answer) of a plain
 * exception: 1 with *parts (a new reference) set and *size grown by what the capture holds,
 * 2 if Python is to capture it, -1 with an error set. */
static int
capture_plain(PyObject *exc_info, PyObject **parts, long long *size)
{
    if (!exceptions_configured || !PyTuple_CheckExact(exc_info)
        || PyTuple_GET_SIZE(exc_info) != 3)
        return 2;
    PyObject *exc_type = PyTuple_GET_ITEM(exc_info, 0), *exc = PyTuple_GET_ITEM(exc_info, 1),
        *tb = PyTuple_GET_ITEM(exc_info, 2);
    int notes_shown = 0;
    int plain = plain_exception(exc_type, exc, tb, &notes_shown);
    if (plain <= 0)
        return plain < 0 ? hand_to_python() : 2;
    PyObject *text = NULL, *args = NULL, *repr = NULL, *cache = NULL, *lazycache = NULL,
        *frames = NULL, *module = NULL, *qualname = NULL, *suppress = NULL, *type_name = NULL,
        *class_item = NULL, *tb_id = NULL, *numbers[3] = {NULL, NULL, NULL};
    int status = -1;
    /* The program's code, in Python's order: its repr() (unless written later), its str(),
     * linecache.lazycache; the class's module is read between the first two, as Python does */
    int deferred = deferred_repr(exc_type, exc, &args);
    if (deferred < 0 || (!deferred && (repr = PyObject_Repr(exc)) == NULL)
        || (module = PyObject_GetAttr(exc_type, n_module)) == NULL
        || (text = PyObject_Str(exc)) == NULL)
        goto failed;
    if (!plain_text(text)) {
        status = 2;
        goto done;
    }
    if ((cache = PyObject_GetAttr(linecache_module, n_cache)) == NULL
        || (lazycache = PyObject_GetAttr(linecache_module, n_lazycache)) == NULL
        || (frames = frames_tuple(tb, cache, lazycache)) == NULL)
        goto failed;
    /* Still plain after what they may have changed, which Python reads after them */
    int still = plain_exception(exc_type, exc, tb, &notes_shown);
    if (still < 0)
        goto failed;
    if (!still) {
        status = 2;
        goto done;
    }
    if ((qualname = PyObject_GetAttr(exc_type, n_qualname)) == NULL)
        goto failed;
    suppress = PyBool_FromLong(((PyBaseExceptionObject *)exc)->suppress_context);
    if (!PyUnicode_CheckExact(module))
        Py_SETREF(module, Py_NewRef(Py_None));
    if ((type_name = type_name_of(module, qualname)) == NULL
        || (class_item = class_part(exc_type, args != NULL)) == NULL
        || (tb_id = tb == Py_None ? Py_NewRef(Py_None) : PyLong_FromVoidPtr(tb)) == NULL)
        goto failed;
    Py_ssize_t frame_items = PyTuple_GET_SIZE(frames);
    long long text_length = 4 * (long long)PyUnicode_GET_LENGTH(text);  /* message, repr, str */
    long long frame_count = frame_items / 3 + 1;
    if ((numbers[0] = PyLong_FromLongLong(text_length)) == NULL
        || (numbers[1] = PyLong_FromLongLong(frame_count)) == NULL
        || (numbers[2] = PyLong_FromSsize_t(args == NULL ? -1 : PyTuple_GET_SIZE(args))) == NULL)
        goto failed;
    /* (class, tb id, type name, message, text length, frame count, the root node's slots but
     * its frames, the count of the repr's arguments and those, or -1 and the repr, the frames):
     * _inline_parts' order */
    PyObject *head[] = {
        class_item, tb_id, type_name, text, numbers[0], numbers[1],
        module, qualname, plain_kind, text, Py_None, Py_None, suppress,
        Py_None, Py_None, Py_None, Py_None, numbers[2],
    };
    Py_ssize_t n_head = (Py_ssize_t)(sizeof(head) / sizeof(head[0]));
    Py_ssize_t n_repr = args == NULL ? 1 : PyTuple_GET_SIZE(args);
    PyObject *made = PyTuple_New(n_head + n_repr + frame_items);
    if (made == NULL)
        goto failed;
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n_head; i++)
        PyTuple_SET_ITEM(made, at++, Py_NewRef(head[i]));
    for (Py_ssize_t i = 0; i < n_repr; i++)
        PyTuple_SET_ITEM(made, at++, Py_NewRef(args == NULL ? repr : PyTuple_GET_ITEM(args, i)));
    for (Py_ssize_t i = 0; i < frame_items; i++)
        PyTuple_SET_ITEM(made, at++, Py_NewRef(PyTuple_GET_ITEM(frames, i)));
    *parts = made;
    *size += text_length + frame_overhead * frame_count;
    status = 1;
    goto done;
failed:
    status = hand_to_python();
done:
    Py_XDECREF(text);
    Py_XDECREF(args);
    Py_XDECREF(repr);
    Py_XDECREF(cache);
    Py_XDECREF(lazycache);
    Py_XDECREF(frames);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(suppress);
    Py_XDECREF(type_name);
    Py_XDECREF(class_item);
    Py_XDECREF(tb_id);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(numbers[i]);
    return status;
}

/* pack_common for a record with an exception: its values (exc_info as _INLINE), its
 * arguments, the capture's parts, the count of arguments (-1: args is None) and _EXCEPTION,
 * as _queued._with_exception packs them; 1, 2 or -1 as pack_common answers. The values are
 * borrowed from the record's dict, which the program's code (an exception's str()) could
 * change: they are held while it runs. */
static int
pack_with_exception(PyObject **others, Py_ssize_t n_others, PyObject *args, Py_ssize_t count,
                    PyObject **packed, long long *size)
{
    for (Py_ssize_t i = 0; i < n_others; i++)
        Py_INCREF(others[i]);
    Py_INCREF(args);
    PyObject *parts = NULL;
    long long grown = *size;
    int status = capture_plain(others[exc_info_index], &parts, &grown);
    if (status == 1) {
        Py_ssize_t n_parts = PyTuple_GET_SIZE(parts);
        PyObject *made = PyTuple_New(n_others + count + n_parts + 2);
        PyObject *number = PyLong_FromSsize_t(args == Py_None ? -1 : count);
        if (made == NULL || number == NULL) {
            Py_XDECREF(made);
            Py_XDECREF(number);
            status = -1;
            goto done;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i < n_others; i++)
            PyTuple_SET_ITEM(made, at++,
                             Py_NewRef(i == exc_info_index ? inline_mark : others[i]));
        for (Py_ssize_t i = 0; i < count; i++)
            PyTuple_SET_ITEM(made, at++, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        for (Py_ssize_t i = 0; i < n_parts; i++)
            PyTuple_SET_ITEM(made, at++, Py_NewRef(PyTuple_GET_ITEM(parts, i)));
        PyTuple_SET_ITEM(made, at++, number);
        PyTuple_SET_ITEM(made, at++, Py_NewRef(exception_end));
        untrack_if_flat(made);
        *packed = made;
        *size = grown;
    }
done:
    Py_XDECREF(parts);
    for (Py_ssize_t i = 0; i < n_others; i++)
        Py_DECREF(others[i]);
    Py_DECREF(args);
    return status;
}

/* What the buffer keeps of a common record, and its size: 1 with *packed (a new reference)
 * and *size set; 0 if not common; 2 if Python is to decide (the record untouched); -1 on an
 * error. A packed tuple holding only objects the garbage collector does not track is
 * untracked now: it would be at the first young collection. */
static int
pack_common(PyObject *record, PyObject **packed, long long *size)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return -1;
    }
    if ((PyObject *)Py_TYPE(record) != record_type)
        return 0;
    PyObject *get_message = PyObject_GetAttr(record_type, get_message_name);
    if (get_message == NULL)
        return -1;
    Py_DECREF(get_message);  /* the class holds it: only its identity is compared */
    if (get_message != stdlib_get_message)
        return 0;
    PyObject *attributes = PyObject_GenericGetDict(record, NULL);
    if (attributes == NULL)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(common_keys);
    if (!PyDict_CheckExact(attributes) || PyDict_GET_SIZE(attributes) != n || n > 64) {
        Py_DECREF(attributes);
        return 0;  /* as many attributes as logging's, or not common */
    }
    PyObject *values[64];
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        if (key != PyTuple_GET_ITEM(common_keys, i)) {  /* another order: Python decides */
            Py_DECREF(attributes);
            return 2;
        }
        values[i++] = value;
    }
    /* The values are borrowed from the dict, which this function holds */
    int status = 0;
    PyObject *args = values[args_index];
    PyObject *others[64];
    Py_ssize_t k = 0;
    for (i = 0; i < n; i++)
        if (i != args_index)
            others[k++] = values[i];
    PyObject *msg = others[msg_index];
    if (!PyUnicode_CheckExact(msg) || others[exc_text_index] != Py_None
        || others[stack_info_index] != Py_None)
        goto done;
    Py_ssize_t count = 0;
    PyObject *end;
    if (PyTuple_CheckExact(args) && PyTuple_GET_SIZE(args) > 0) {
        *size = size_with_args(msg, args);
        if (*size < 0) {
            status = *size == -1 ? 0 : *size == -2 ? 2 : -1;
            goto done;
        }
        count = PyTuple_GET_SIZE(args);
        end = common_end;
    }
    else if (args == Py_None || PyTuple_CheckExact(args)) {
        int ascii = is_ascii(msg);
        if (ascii < 0) {
            status = -1;
            goto done;
        }
        long long length = PyUnicode_GET_LENGTH(msg);
        if (length >= wide_text_check && !ascii) {  /* its size is sys.getsizeof: Python's */
            status = 2;
            goto done;
        }
        *size = snapshot_overhead + length;
        end = args == Py_None ? no_args_end : common_end;
    }
    else
        goto done;
    if (others[exc_info_index] != Py_None) {
        status = pack_with_exception(others, n - 1, args, count, packed, size);
        goto done;
    }
    PyObject *made = PyTuple_New(n - 1 + count + 1);
    if (made == NULL) {
        status = -1;
        goto done;
    }
    for (i = 0; i < n - 1 + count + 1; i++) {
        PyObject *item = i < n - 1 ? others[i]
            : i < n - 1 + count ? PyTuple_GET_ITEM(args, i - (n - 1))
            : PyTuple_GET_ITEM(end, 0);
        PyTuple_SET_ITEM(made, i, Py_NewRef(item));
    }
    untrack_if_flat(made);
    *packed = made;
    status = 1;
done:
    Py_DECREF(attributes);
    return status;
}

static PyObject *
common_record(PyObject *module, PyObject *record)
{
    PyObject *packed;
    long long size;
    switch (pack_common(record, &packed, &size)) {
    case 1: {
        PyObject *number = PyLong_FromLongLong(size);
        if (number == NULL) {
            Py_DECREF(packed);
            return NULL;
        }
        PyObject *result = PyTuple_Pack(2, packed, number);
        Py_DECREF(packed);
        Py_DECREF(number);
        return result;
    }
    case 0:
        Py_RETURN_NONE;
    case 2:
        return PyObject_CallOneArg(fallback, record);
    default:
        return NULL;
    }
}

/* flat_plain(fields): True if ``fields`` is a dict whose values are all of the classes
 * orjson writes as the standard library's encoder does: str, int, bool, None, and finite
 * floats. ``_wire._fast_enough`` in Python, for the worker's every record. */
static PyObject *
flat_plain(PyObject *module, PyObject *fields)
{
    return PyBool_FromLong(PyDict_CheckExact(fields) && plain_values(fields));
}

/* WireFields: _queued.wire_fields_maker's function for a common record without an exception,
 * in C: a copy of the template (every wire key in order, the enrichment's values), the
 * record's values, ``args`` as its text, the message made, the process id. Any other item,
 * and any step that fails (a message that does not format, a text that cannot be made), goes
 * to the Python function, which writes what it writes of it.
 *
 * Given a sequence key and a JSON layout, its ready(item, seq) makes of such a record a Ready,
 * for write_json (_json_records.c) to write with no dict made; any other item it makes fields
 * of, as above, with the sequence number. */
typedef struct {
    PyObject_HEAD
    PyObject *template;     /* dict */
    PyObject *other_keys;   /* tuple: the keys of a packed record's values, in order */
    PyObject *args_key, *message_key, *pid_key;
    PyObject *seq_key;      /* str, or NULL: no ready() */
    PyObject *python;       /* the Python function, for any other item */
    Py_ssize_t process_index, msg_index;
    JsonLayout layout;
} WireFields;

/* 1 with ``args_text`` and ``message`` made if ``item`` is a common record without an
 * exception that C writes, 0 if the Python function is to, -1 with an error set. */
static int
common_texts(WireFields *self, PyObject *item, PyObject **args_text, PyObject **message)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->other_keys);
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < n + 1)
        return 0;
    Py_ssize_t length = PyTuple_GET_SIZE(item);
    PyObject *last = PyTuple_GET_ITEM(item, length - 1);
    PyObject *args;
    if (last == PyTuple_GET_ITEM(common_end, 0))
        args = PyTuple_GetSlice(item, n, length - 1);
    else if (last == PyTuple_GET_ITEM(no_args_end, 0) && length == n + 1)
        args = Py_NewRef(Py_None);
    else  /* an exception's capture inline, or a snapshot */
        return 0;
    if (args == NULL)
        return -1;
    PyObject *msg = PyTuple_GET_ITEM(item, self->msg_index);
    *args_text = *message = NULL;
    if (!PyUnicode_CheckExact(msg) || PyTuple_GET_ITEM(item, self->process_index) == Py_None)
        goto python;
    if (args == Py_None)
        *args_text = Py_NewRef(Py_None);
    else if ((*args_text = PyObject_Str(args)) == NULL)
        goto python;
    if (args == Py_None || PyTuple_GET_SIZE(args) == 0)
        *message = Py_NewRef(msg);
    else if ((*message = PyUnicode_Format(msg, args)) == NULL)
        goto python;
    Py_DECREF(args);
    return 1;
python:  /* Python writes what it writes of it: a failed message's account, this process's id */
    PyErr_Clear();
    Py_DECREF(args);
    Py_CLEAR(*args_text);
    Py_CLEAR(*message);
    return 0;
}

/* The fields of a record common_texts() took, as the Python function makes them. */
static PyObject *
common_fields(WireFields *self, PyObject *item, PyObject *args_text, PyObject *message)
{
    PyObject *fields = PyDict_Copy(self->template);
    if (fields == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(self->other_keys);
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyDict_SetItem(fields, PyTuple_GET_ITEM(self->other_keys, i),
                           PyTuple_GET_ITEM(item, i)) < 0)
            goto failed;
    if (PyDict_SetItem(fields, self->args_key, args_text) < 0
        || PyDict_SetItem(fields, self->message_key, message) < 0
        || PyDict_SetItem(fields, self->pid_key,
                          PyTuple_GET_ITEM(item, self->process_index)) < 0)
        goto failed;
    return fields;
failed:
    Py_DECREF(fields);
    return NULL;
}

static PyObject *
wire_fields_call(WireFields *self, PyObject *call_args, PyObject *kwargs)
{
    if (kwargs != NULL || PyTuple_GET_SIZE(call_args) != 1)
        return PyObject_Call(self->python, call_args, kwargs);
    PyObject *item = PyTuple_GET_ITEM(call_args, 0);
    PyObject *args_text, *message;
    int common = common_texts(self, item, &args_text, &message);
    if (common <= 0)
        return common < 0 ? NULL : PyObject_CallOneArg(self->python, item);
    PyObject *fields = common_fields(self, item, args_text, message);
    Py_DECREF(args_text);
    Py_DECREF(message);
    return fields;
}

/* ready(item, seq): a Ready if the item is a common record whose values write_json may
 * write, else its fields (the Python function's, for any other item) with ``seq``. */
static PyObject *
wire_fields_ready(WireFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "ready() takes an item and an int");
        return NULL;
    }
    if (self->seq_key == NULL) {
        PyErr_SetString(PyExc_TypeError, "this WireFields was made without a seq_key");
        return NULL;
    }
    PyObject *item = args[0], *seq = args[1];
    PyObject *args_text = NULL, *message = NULL;
    int common = self->layout.literals == NULL ? 0
                 : common_texts(self, item, &args_text, &message);
    if (common < 0)
        return NULL;
    if (common > 0) {
        Ready *ready = PyObject_New(Ready, &ReadyType);
        if (ready == NULL) {
            Py_DECREF(args_text);
            Py_DECREF(message);
            return NULL;
        }
        ready->maker = Py_NewRef((PyObject *)self);
        ready->layout = &self->layout;
        ready->item = Py_NewRef(item);
        ready->args_text = args_text;
        ready->message = message;
        ready->seq = Py_NewRef(seq);
        return (PyObject *)ready;
    }
    PyObject *fields = PyObject_CallOneArg((PyObject *)self, item);
    if (fields != NULL && PyObject_SetItem(fields, self->seq_key, seq) < 0)
        Py_CLEAR(fields);
    return fields;
}

static PyObject *
wire_fields_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "template", "other_keys", "args_key", "message_key", "pid_key", "python",
        "process_index", "msg_index", "seq_key", "literals", "sources", NULL,
    };
    PyObject *template, *other_keys, *args_key, *message_key, *pid_key, *python;
    PyObject *seq_key = NULL, *literals = NULL, *sources = NULL;
    Py_ssize_t process_index, msg_index;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O!O!UUUOnn|$UO!O!:WireFields", keywords, &PyDict_Type, &template,
            &PyTuple_Type, &other_keys, &args_key, &message_key, &pid_key, &python,
            &process_index, &msg_index, &seq_key, &PyTuple_Type, &literals, &PyTuple_Type,
            &sources))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(other_keys);
    if (process_index < 0 || process_index >= n || msg_index < 0 || msg_index >= n) {
        PyErr_SetString(PyExc_ValueError, "an index beyond the keys");
        return NULL;
    }
    if ((literals == NULL) != (sources == NULL) || (literals != NULL && seq_key == NULL)) {
        PyErr_SetString(PyExc_TypeError, "a layout needs literals, sources and a seq_key");
        return NULL;
    }
    WireFields *self = (WireFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (literals != NULL && json_layout_init(&self->layout, literals, sources, n) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->template = Py_NewRef(template);
    self->other_keys = Py_NewRef(other_keys);
    self->args_key = Py_NewRef(args_key);
    self->message_key = Py_NewRef(message_key);
    self->pid_key = Py_NewRef(pid_key);
    self->seq_key = seq_key == NULL ? NULL : Py_NewRef(seq_key);
    self->python = Py_NewRef(python);
    self->process_index = process_index;
    self->msg_index = msg_index;
    return (PyObject *)self;
}

static int
wire_fields_traverse(WireFields *self, visitproc visit, void *arg)
{
    Py_VISIT(self->template);
    Py_VISIT(self->python);
    return 0;
}

static int
wire_fields_clear(WireFields *self)
{
    Py_CLEAR(self->template);
    Py_CLEAR(self->other_keys);
    Py_CLEAR(self->args_key);
    Py_CLEAR(self->message_key);
    Py_CLEAR(self->pid_key);
    Py_CLEAR(self->seq_key);
    Py_CLEAR(self->python);
    return 0;
}

static void
wire_fields_dealloc(WireFields *self)
{
    PyObject_GC_UnTrack(self);
    wire_fields_clear(self);
    json_layout_clear(&self->layout);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef wire_fields_methods[] = {
    {"ready", (PyCFunction)(void (*)(void))wire_fields_ready, METH_FASTCALL,
     "ready(item, seq): a record write_json writes, or its fields with seq."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WireFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ex_loghandlers._speedups.WireFields",
    .tp_basicsize = sizeof(WireFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The wire fields of a common record without an exception, in C.",
    .tp_new = wire_fields_new,
    .tp_call = (ternaryfunc)wire_fields_call,
    .tp_methods = wire_fields_methods,
    .tp_traverse = (traverseproc)wire_fields_traverse,
    .tp_clear = (inquiry)wire_fields_clear,
    .tp_dealloc = (destructor)wire_fields_dealloc,
};

/* Ready: see _speedups.h. Not tracked by the garbage collector: no code of the program's ever
 * holds one, so no cycle can pass through it. */
static PyObject *
ready_fields(Ready *self, PyObject *unused)
{
    WireFields *maker = (WireFields *)self->maker;
    PyObject *fields = common_fields(maker, self->item, self->args_text, self->message);
    if (fields != NULL && PyDict_SetItem(fields, maker->seq_key, self->seq) < 0)
        Py_CLEAR(fields);
    return fields;
}

static void
ready_dealloc(Ready *self)
{
    Py_DECREF(self->maker);
    Py_DECREF(self->item);
    Py_DECREF(self->args_text);
    Py_DECREF(self->message);
    Py_DECREF(self->seq);
    PyObject_Free(self);
}

static PyMethodDef ready_methods[] = {
    {"fields", (PyCFunction)ready_fields, METH_NOARGS,
     "The record's fields, as WireFields makes them, with its sequence number."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ex_loghandlers._speedups.Ready",
    .tp_basicsize = sizeof(Ready),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A common record ready to be written as JSON (write_json); fields() as a dict.",
    .tp_methods = ready_methods,
    .tp_dealloc = (destructor)ready_dealloc,
};

/* FastHandle: ExHTTPHandler.handle() for a record on the common path, in one C call.
 *
 * The common path: no filters, the handler open and listed, nothing set aside, this thread
 * neither inside emit() already nor one of the handler's workers, its worker started, a
 * common record (pack_common), and room in the buffer, whose lock is free. Then it does what
 * handle() and emit() do: the thread marked inside emit(), the record appended with its size,
 * the worker rung when the buffer stops being empty or fills a batch. Between taking the
 * buffer's lock and letting it go it runs no Python code and makes nothing the garbage
 * collector tracks, so no other thread and no re-entry on this one sees the buffer
 * half-changed. Any other case goes to the handler's Python methods: handle() before anything
 * is done, _emit_prepared() once the record is made.
 *
 * It is made with the handler's delivery, and keeps what stays the same for the delivery's
 * life: the handler makes a new one with each new delivery (see _use_fast_handle).
 */
typedef struct {
    PyObject_HEAD
    PyObject *handler;        /* a cycle, through the handler's __dict__: tp_traverse */
    PyObject *slow_handle;    /* ExHTTPHandler.handle, unbound */
    PyObject *emit;           /* ExHTTPHandler.emit: another one (patched) is called */
    PyObject *get_ident;      /* the thread ident the Python code marks _inside with */
    PyObject *delivery;
    PyObject *inside;         /* the handler's set of threads inside emit() */
    PyObject *aside;          /* its deque of records a re-entered emit() set aside */
    PyObject *workers;        /* the delivery's set of worker thread idents */
    PyObject *buffer;
    PyObject *lock_acquire;   /* the buffer's lock's bound methods */
    PyObject *lock_release;
    PyObject *items;          /* the buffer's deque of records */
    PyObject *items_append;   /* the buffer's deques' bound append methods */
    PyObject *sizes_append;
    long long max_items, max_bytes, batch_size;
} FastHandle;

static long long
attribute_long(PyObject *obj, PyObject *name, int *error)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        *error = 1;
        return 0;
    }
    long long number = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (number == -1 && PyErr_Occurred())
        *error = 1;
    return number;
}

/* Append item and size under the buffer's lock, as RecordBuffer.put's fast path does.
 * Returns the records queued after it, 0 if it did not (the lock busy, the buffer closed or
 * full: the Python path decides), -1 on an error. */
static Py_ssize_t
put_quietly(FastHandle *self, PyObject *item, long long size)
{
    PyObject *got = PyObject_CallOneArg(self->lock_acquire, Py_False);
    if (got == NULL)
        return -1;
    int acquired = got == Py_True;
    Py_DECREF(got);
    if (!acquired)
        return 0;
    Py_ssize_t queued = -1;
    PyObject *size_object = NULL, *new_bytes = NULL, *new_total = NULL;
    int error = 0;
    int closed = attribute_true(self->buffer, n_buffer_closed);
    if (closed != 0) {
        queued = closed < 0 ? -1 : 0;
        goto release;
    }
    Py_ssize_t length = PyObject_Length(self->items);
    long long bytes = attribute_long(self->buffer, n_bytes, &error);
    long long total = attribute_long(self->buffer, n_accepted_total, &error);
    if (length < 0 || error)
        goto release;
    if (!(length < self->max_items && bytes + size <= self->max_bytes)) {
        queued = 0;
        goto release;
    }
    /* Every object made before the first change: nothing fails half-way. */
    size_object = PyLong_FromLongLong(size);
    new_bytes = PyLong_FromLongLong(bytes + size);
    new_total = PyLong_FromLongLong(total + 1);
    if (size_object == NULL || new_bytes == NULL || new_total == NULL)
        goto release;
    PyObject *done = PyObject_CallOneArg(self->items_append, item);
    if (done == NULL)
        goto release;
    Py_DECREF(done);
    done = PyObject_CallOneArg(self->sizes_append, size_object);
    if (done == NULL) {  /* the deques in step again: the record goes emit()'s way */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *popped = PyObject_CallMethod(self->items, "pop", NULL);
        Py_XDECREF(popped);
        PyErr_Restore(type, value, traceback);
        goto release;
    }
    Py_DECREF(done);
    if (PyObject_SetAttr(self->buffer, n_bytes, new_bytes) < 0
        || PyObject_SetAttr(self->buffer, n_accepted_total, new_total) < 0)
        goto release;
    queued = length + 1;
release:
    Py_XDECREF(size_object);
    Py_XDECREF(new_bytes);
    Py_XDECREF(new_total);
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *released = PyObject_CallNoArgs(self->lock_release);
        if (released == NULL) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            return -1;
        }
        Py_DECREF(released);
        PyErr_Restore(type, value, traceback);
    }
    return queued;
}

/* 1 if the common path may be taken for this call, 0 if not, -1 on an error. */
static int
common_path_open(FastHandle *self, PyObject *handler, PyObject *ident)
{
    int flag;
    if ((flag = attribute_true(handler, n_filters)) != 0
        || (flag = attribute_true(handler, n_closed)) != 0
        || (flag = attribute_true(handler, n_unlisted)) != 0
        || (flag = attribute_true(handler, n_close_in_emit)) != 0)
        return flag < 0 ? -1 : 0;
    Py_ssize_t aside = PyObject_Length(self->aside);
    if (aside != 0)
        return aside < 0 ? -1 : 0;
    PyObject *thread = PyObject_GetAttr(self->delivery, n_thread);
    if (thread == NULL)
        return -1;
    Py_DECREF(thread);
    if (thread == Py_None)
        return 0;  /* its worker not started yet: handle() starts it */
    int worker = PySet_Contains(self->workers, ident);
    return worker != 0 ? (worker < 0 ? -1 : 0) : 1;
}

/* The record on the common path, with this thread marked inside emit(): a new reference to
 * anything, or NULL with an error of ours set. */
static PyObject *
handle_common(FastHandle *self, PyObject *handler, PyObject *record, PyObject *packed,
              long long size)
{
    Py_ssize_t queued = put_quietly(self, packed, size);
    if (queued < 0)
        return NULL;
    if (queued == 0) {  /* the lock busy, the buffer full or closed: emit()'s way */
        PyObject *number = PyLong_FromLongLong(size);
        if (number == NULL)
            return NULL;
        PyObject *went = PyObject_CallMethodObjArgs(
            handler, n_emit_prepared, record, packed, number, NULL);
        Py_DECREF(number);
        return went;
    }
    if (queued != 1 && queued < self->batch_size)
        Py_RETURN_NONE;
    /* The worker may be idle, or a batch is full: ring, unless it rang already. The doorbell
     * is the delivery's now: a spool's writer that failed hands it back to the worker. */
    PyObject *doorbell = PyObject_GetAttr(self->delivery, n_doorbell);
    if (doorbell == NULL)
        return NULL;
    PyObject *flag = PyObject_GetAttr(doorbell, n_flag);
    Py_DECREF(doorbell);
    if (flag == NULL)
        PyErr_Clear();
    else if (flag == Py_True) {
        Py_DECREF(flag);
        Py_RETURN_NONE;
    }
    Py_XDECREF(flag);
    return PyObject_CallMethodOneArg(handler, n_ring, self->delivery);
}

/* 1 if the handler's emit() is still ExHTTPHandler's (not patched on the class or the
 * handler since), 0 if not, -1 on an error. */
static int
emit_is_ours(FastHandle *self, PyObject *handler)
{
    PyObject *on_class = PyObject_GetAttr((PyObject *)Py_TYPE(handler), n_emit);
    if (on_class == NULL)
        return -1;
    Py_DECREF(on_class);
    if (on_class != self->emit)
        return 0;
    PyObject *attributes = PyObject_GenericGetDict(handler, NULL);
    if (attributes == NULL)
        return -1;
    PyObject *own = PyDict_GetItemWithError(attributes, n_emit);
    Py_DECREF(attributes);
    if (own == NULL)
        return PyErr_Occurred() ? -1 : 1;
    return 0;
}

/* pack_common's answer when Python decides: 1 with *packed and *size set, 0 if the record is
 * not common after all, -1 on an error. */
static int
python_decides(PyObject *record, PyObject **packed, long long *size)
{
    PyObject *answer = PyObject_CallOneArg(fallback, record);
    if (answer == NULL)
        return -1;
    if (answer == Py_None) {
        Py_DECREF(answer);
        return 0;
    }
    if (!PyTuple_CheckExact(answer) || PyTuple_GET_SIZE(answer) != 2) {
        Py_DECREF(answer);
        PyErr_SetString(PyExc_TypeError, "common_record gave neither None nor (item, size)");
        return -1;
    }
    *size = PyLong_AsLongLong(PyTuple_GET_ITEM(answer, 1));
    if (*size == -1 && PyErr_Occurred()) {
        Py_DECREF(answer);
        return -1;
    }
    *packed = Py_NewRef(PyTuple_GET_ITEM(answer, 0));
    Py_DECREF(answer);
    return 1;
}

static PyObject *
fast_handle_call(FastHandle *self, PyObject *call_args, PyObject *kwargs)
{
    PyObject *handler = Py_NewRef(self->handler);
    if (kwargs != NULL || PyTuple_GET_SIZE(call_args) != 1) {  /* Python's handle() answers */
        PyObject *bound = PyMethod_New(self->slow_handle, handler);
        Py_DECREF(handler);
        if (bound == NULL)
            return NULL;
        PyObject *answer = PyObject_Call(bound, call_args, kwargs);
        Py_DECREF(bound);
        return answer;
    }
    PyObject *record = PyTuple_GET_ITEM(call_args, 0);
    PyObject *result = NULL, *packed = NULL;
    long long size = 0;
    int marked = 0;
    PyObject *ident = PyObject_CallNoArgs(self->get_ident);
    if (ident == NULL)
        goto failed;
    int open = PySet_Contains(self->inside, ident);
    if (open < 0)
        goto failed;
    open = open ? 0 : emit_is_ours(self, handler);
    if (open < 0)
        goto failed;
    open = open ? common_path_open(self, handler, ident) : 0;
    if (open < 0)
        goto failed;
    if (open) {
        if (PySet_Add(self->inside, ident) < 0)
            goto failed;
        marked = 1;
        open = pack_common(record, &packed, &size);
        if (open < 0)
            goto failed;
        if (open == 2 && (open = python_decides(record, &packed, &size)) < 0)
            goto failed;
    }
    if (!open) {  /* anything but the common path: handle() in Python */
        if (marked) {  /* this call's mark only: an outer emit()'s stays */
            marked = 0;
            if (PySet_Discard(self->inside, ident) < 0)
                goto failed;
        }
        result = PyObject_CallFunctionObjArgs(self->slow_handle, handler, record, NULL);
        goto done;
    }
    PyObject *went = handle_common(self, handler, record, packed, size);
    if (went == NULL)
        goto failed;
    Py_DECREF(went);
    marked = 0;
    if (PySet_Discard(self->inside, ident) < 0)
        goto failed;
    Py_ssize_t aside = PyObject_Length(self->aside);  /* logged by a finalizer meanwhile */
    if (aside < 0)
        goto failed;
    if (aside > 0) {
        went = PyObject_CallMethodNoArgs(handler, n_move_aside_on);
        if (went == NULL)
            goto failed;
        Py_DECREF(went);
    }
    result = Py_NewRef(Py_True);
    goto done;
failed:  /* a bug of ours, as emit() treats one: counted and told, never raised */
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (marked)
            PySet_Discard(self->inside, ident);
        PyErr_Clear();
        PyErr_NormalizeException(&type, &value, &traceback);
        if (value == NULL)
            value = Py_NewRef(Py_None);
        if (traceback != NULL && value != Py_None)
            PyException_SetTraceback(value, traceback);
        result = PyObject_CallMethodObjArgs(handler, n_fast_handle_failed, record, value, NULL);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        if (result != NULL)
            Py_SETREF(result, Py_NewRef(Py_True));
    }
done:
    Py_XDECREF(packed);
    Py_XDECREF(ident);
    Py_DECREF(handler);
    return result;
}

static PyObject *
fast_handle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "handler", "slow_handle", "emit", "get_ident", "delivery", "inside", "aside",
        "workers", "buffer", "lock", "items", "sizes", "max_items", "max_bytes", "batch_size",
        NULL,
    };
    PyObject *handler, *slow_handle, *emit, *get_ident, *delivery, *inside, *aside, *workers,
        *buffer, *lock, *items, *sizes;
    long long max_items, max_bytes, batch_size;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOO!OO!OOOOLLL:FastHandle", keywords, &handler, &slow_handle,
            &emit, &get_ident, &delivery, &PySet_Type, &inside, &aside, &PySet_Type, &workers, &buffer,
            &lock, &items, &sizes, &max_items, &max_bytes, &batch_size))
        return NULL;
    FastHandle *self = (FastHandle *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->handler = Py_NewRef(handler);
    self->slow_handle = Py_NewRef(slow_handle);
    self->emit = Py_NewRef(emit);
    self->get_ident = Py_NewRef(get_ident);
    self->delivery = Py_NewRef(delivery);
    self->inside = Py_NewRef(inside);
    self->aside = Py_NewRef(aside);
    self->workers = Py_NewRef(workers);
    self->buffer = Py_NewRef(buffer);
    self->lock_acquire = PyObject_GetAttrString(lock, "acquire");
    self->lock_release = PyObject_GetAttrString(lock, "release");
    self->items = Py_NewRef(items);
    self->items_append = PyObject_GetAttrString(items, "append");
    self->sizes_append = PyObject_GetAttrString(sizes, "append");
    self->max_items = max_items;
    self->max_bytes = max_bytes;
    self->batch_size = batch_size;
    if (self->lock_acquire == NULL || self->lock_release == NULL
        || self->items_append == NULL || self->sizes_append == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
fast_handle_traverse(FastHandle *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->slow_handle);
    Py_VISIT(self->emit);
    Py_VISIT(self->get_ident);
    Py_VISIT(self->delivery);
    Py_VISIT(self->inside);
    Py_VISIT(self->aside);
    Py_VISIT(self->workers);
    Py_VISIT(self->buffer);
    Py_VISIT(self->lock_acquire);
    Py_VISIT(self->lock_release);
    Py_VISIT(self->items);
    Py_VISIT(self->items_append);
    Py_VISIT(self->sizes_append);
    return 0;
}

static int
fast_handle_clear(FastHandle *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->slow_handle);
    Py_CLEAR(self->emit);
    Py_CLEAR(self->get_ident);
    Py_CLEAR(self->delivery);
    Py_CLEAR(self->inside);
    Py_CLEAR(self->aside);
    Py_CLEAR(self->workers);
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->lock_acquire);
    Py_CLEAR(self->lock_release);
    Py_CLEAR(self->items);
    Py_CLEAR(self->items_append);
    Py_CLEAR(self->sizes_append);
    return 0;
}

static void
fast_handle_dealloc(FastHandle *self)
{
    PyObject_GC_UnTrack(self);
    fast_handle_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FastHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ex_loghandlers._speedups.FastHandle",
    .tp_basicsize = sizeof(FastHandle),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ExHTTPHandler.handle() for a record on the common path, in C.",
    .tp_new = fast_handle_new,
    .tp_call = (ternaryfunc)fast_handle_call,
    .tp_traverse = (traverseproc)fast_handle_traverse,
    .tp_clear = (inquiry)fast_handle_clear,
    .tp_dealloc = (destructor)fast_handle_dealloc,
};

static PyMethodDef methods[] = {
    {"usable", usable, METH_NOARGS, "True if this interpreter may use the module."},
    {"configure", configure, METH_VARARGS, "Give the module _queued's constants."},
    {"configure_exceptions", configure_exceptions, METH_VARARGS,
     "Give the module what an exception's capture is worked out with."},
    {"frames_of", frames_of, METH_VARARGS,
     "A traceback's frames: file name, line number, function name for each, flat."},
    {"flat_plain", flat_plain, METH_O,
     "True if a dict's values are all str, int, bool, None or finite floats."},
    {"common_record", common_record, METH_O,
     "What the buffer keeps of a common record, and its size; None if not common."},
    {"write_json", write_json, METH_VARARGS,
     "write_json(records, separator, dumps): Ready records as JSON, joined; None if not."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The application thread's share of a record, in C.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_names() < 0 || intern_exception_names() < 0 || PyType_Ready(&FastHandleType) < 0
        || PyType_Ready(&WireFieldsType) < 0 || PyType_Ready(&ReadyType) < 0)
        return NULL;
    json_records_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "LAYOUT", LAYOUT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FastHandleType);
    if (PyModule_AddObject(m, "FastHandle", (PyObject *)&FastHandleType) < 0) {
        Py_DECREF(&FastHandleType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WireFieldsType);
    if (PyModule_AddObject(m, "WireFields", (PyObject *)&WireFieldsType) < 0) {
        Py_DECREF(&WireFieldsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
