/* The application thread's share of every common record, in C: ``common_record``.
 *
 * ``_queued.common_record`` in Python, for the records that need no decision of its own: a
 * plain ``LogRecord`` whose attributes are logging's in logging's order, a ``str`` template
 * whose conversions ``_queued`` already knows, arguments that are short ints, floats, bools,
 * None or strings, and no exception or stack. For those it returns what the Python function
 * returns, the same tuple and size, or None where it returns None. Any other record it hands
 * to the Python function (``fallback``), which decides: so the two can only agree.
 *
 * ``configure()`` gives it ``_queued``'s constants once, at import.
 */
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

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *type, *getmsg, *keys, *c_end, *n_end, *known, *native, *fb;
    long long so, ao, nt, wtc;
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
    if (get_message_name == NULL && (get_message_name = PyUnicode_InternFromString("getMessage")) == NULL)
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

static PyObject *
common_record(PyObject *module, PyObject *record)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups is not configured");
        return NULL;
    }
    if ((PyObject *)Py_TYPE(record) != record_type)
        Py_RETURN_NONE;
    PyObject *get_message = PyObject_GetAttr(record_type, get_message_name);
    if (get_message == NULL)
        return NULL;
    Py_DECREF(get_message);  /* the class holds it: only its identity is compared */
    if (get_message != stdlib_get_message)
        Py_RETURN_NONE;
    PyObject *attributes = PyObject_GenericGetDict(record, NULL);
    if (attributes == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(common_keys);
    if (!PyDict_CheckExact(attributes) || PyDict_GET_SIZE(attributes) != n) {
        Py_DECREF(attributes);
        Py_RETURN_NONE;  /* as many attributes as logging's, or not common */
    }
    PyObject *values[64];
    if (n > 64) {
        Py_DECREF(attributes);
        return PyObject_CallOneArg(fallback, record);
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        if (key != PyTuple_GET_ITEM(common_keys, i)) {  /* another order: Python decides */
            Py_DECREF(attributes);
            return PyObject_CallOneArg(fallback, record);
        }
        values[i++] = value;
    }
    /* The values are borrowed from the dict, which this function holds */
    PyObject *result = NULL;
    PyObject *args = values[args_index];
    PyObject *others[64];
    Py_ssize_t k = 0;
    for (i = 0; i < n; i++)
        if (i != args_index)
            others[k++] = values[i];
    PyObject *msg = others[msg_index];
    if (!PyUnicode_CheckExact(msg) || others[exc_text_index] != Py_None
        || others[stack_info_index] != Py_None) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (others[exc_info_index] != Py_None) {  /* an exception: Python captures it */
        result = PyObject_CallOneArg(fallback, record);
        goto done;
    }
    long long size;
    Py_ssize_t count = 0;
    PyObject *end;
    if (PyTuple_CheckExact(args) && PyTuple_GET_SIZE(args) > 0) {
        size = size_with_args(msg, args);
        if (size == -1) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (size == -2) {
            result = PyObject_CallOneArg(fallback, record);
            goto done;
        }
        if (size == -3)
            goto done;
        count = PyTuple_GET_SIZE(args);
        end = common_end;
    }
    else if (args == Py_None || PyTuple_CheckExact(args)) {
        int ascii = is_ascii(msg);
        if (ascii < 0)
            goto done;
        long long length = PyUnicode_GET_LENGTH(msg);
        if (length >= wide_text_check && !ascii) {  /* its size is sys.getsizeof: Python's */
            result = PyObject_CallOneArg(fallback, record);
            goto done;
        }
        size = snapshot_overhead + length;
        end = args == Py_None ? no_args_end : common_end;
    }
    else {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *packed = PyTuple_New(n - 1 + count + 1);
    if (packed == NULL)
        goto done;
    for (i = 0; i < n - 1; i++)
        PyTuple_SET_ITEM(packed, i, Py_NewRef(others[i]));
    for (i = 0; i < count; i++)
        PyTuple_SET_ITEM(packed, n - 1 + i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    PyTuple_SET_ITEM(packed, n - 1 + count, Py_NewRef(PyTuple_GET_ITEM(end, 0)));
    PyObject *number = PyLong_FromLongLong(size);
    if (number == NULL) {
        Py_DECREF(packed);
        goto done;
    }
    result = PyTuple_Pack(2, packed, number);
    Py_DECREF(packed);
    Py_DECREF(number);
done:
    Py_DECREF(attributes);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Give the module _queued's constants."},
    {"common_record", common_record, METH_O,
     "What the buffer keeps of a common record, and its size; None if not common."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The application thread's share of a record, in C.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
