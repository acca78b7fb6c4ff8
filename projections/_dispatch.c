/* The fold's hot loop, compiled: the contract of projections/dispatch.py, which holds the
 * reference implementation (fold_run_python) and documents both.
 *
 * Rule: no I/O, no clock, no state of its own. It reads the same fields the reference
 * reads, calls the same handlers with the same arguments in the same order, and leaves
 * every decision that is not dispatch or counting to those (Python) handlers.
 *
 * Why C: dispatching about a million events a second is most of the fold's cost in
 * CPython (the loop, the type switch, the per-type count). Fields are read straight
 * from the slots that the events' member descriptors name, after checking that every
 * type in the spec has those slots.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_TYPES 128
#define SPEC_FIELDS 13
#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

static PyObject *one;      /* 1 */
static PyObject *infinity; /* float("inf") */

/* The slot offset of an object member descriptor, and the type that owns it. */
static Py_ssize_t member_offset(PyObject *descr, PyTypeObject **owner) {
    if (!PyObject_TypeCheck(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "fold_run: %R is not a member descriptor", descr);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "fold_run: %R is not an object member", descr);
        return -1;
    }
    *owner = PyDescr_TYPE(descr);
    return member->offset;
}

/* handler(event, now); 0 on success, -1 with an exception set. */
static int call(PyObject *handler, PyObject *event, PyObject *now) {
    PyObject *args[2] = {event, now};
    PyObject *result = PyObject_Vectorcall(handler, args, 2, NULL);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Is ``ts`` a new clock value: ``now < ts < inf``, as Python compares them? -1 on error. */
static int advances(PyObject *now, PyObject *ts) {
    if (PyFloat_CheckExact(ts) && PyFloat_CheckExact(now)) {
        double t = PyFloat_AS_DOUBLE(ts);
        return PyFloat_AS_DOUBLE(now) < t && t < Py_HUGE_VAL;
    }
    int below = PyObject_RichCompareBool(now, ts, Py_LT);
    if (below <= 0) {
        return below;
    }
    return PyObject_RichCompareBool(ts, infinity, Py_LT);
}

/* Bump api[method][status] and set api_touched[method][status] = now if that series
 * exists (and both dicts hold the method): 1 if bumped, 0 if not, -1 on error. */
static int bump_api(PyObject *api, PyObject *api_touched, PyObject *method, PyObject *status,
                    PyObject *now) {
    if (method == NULL || status == NULL) {
        return 0; /* unset slots: the handler raises the AttributeError */
    }
    PyObject *by_status = PyDict_GetItemWithError(api, method);
    if (by_status == NULL || !PyDict_CheckExact(by_status)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *touched = PyDict_GetItemWithError(api_touched, method);
    if (touched == NULL || !PyDict_CheckExact(touched)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *count = PyDict_GetItemWithError(by_status, status);
    if (count == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *bumped = PyNumber_Add(count, one);
    if (bumped == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(by_status, status, bumped);
    Py_DECREF(bumped);
    if (rc < 0 || PyDict_SetItem(touched, status, now) < 0) {
        return -1;
    }
    return 1;
}

static PyObject *fold_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "fold_run(events, start, now, spec) takes 4 arguments");
        return NULL;
    }
    PyObject *events = args[0], *now = args[2], *spec = args[3];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_Check(events) || start < 0) {
        PyErr_SetString(PyExc_TypeError, "fold_run: events must be a list, start >= 0");
        return NULL;
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != SPEC_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "fold_run: spec must be a FoldSpec");
        return NULL;
    }
    PyObject *types = PyTuple_GET_ITEM(spec, 0), *handlers = PyTuple_GET_ITEM(spec, 1);
    PyObject *api = PyTuple_GET_ITEM(spec, 2), *api_miss = PyTuple_GET_ITEM(spec, 3);
    PyObject *api_type = PyTuple_GET_ITEM(spec, 4), *bus_type = PyTuple_GET_ITEM(spec, 5);
    PyObject *stop_type = PyTuple_GET_ITEM(spec, 6);
    PyObject *indexed = PyTuple_GET_ITEM(spec, 10), *cursor = PyTuple_GET_ITEM(spec, 11);
    PyObject *api_touched = PyTuple_GET_ITEM(spec, 12);
    if (!PyDict_CheckExact(api_touched)) {
        PyErr_SetString(PyExc_TypeError, "fold_run: spec.api_touched must be a dict");
        return NULL;
    }
    if (!PyTuple_Check(types) || !PyTuple_Check(handlers) || !PyDict_CheckExact(api) ||
        PyTuple_GET_SIZE(types) != PyTuple_GET_SIZE(handlers) ||
        PyTuple_GET_SIZE(types) > MAX_TYPES) {
        PyErr_SetString(PyExc_TypeError, "fold_run: spec.types and spec.handlers differ");
        return NULL;
    }
    if (!PyTuple_Check(indexed) || !PyList_CheckExact(cursor) || PyList_GET_SIZE(cursor) != 1) {
        PyErr_SetString(PyExc_TypeError, "fold_run: spec.indexed must be a tuple, spec.cursor [int]");
        return NULL;
    }
    PyTypeObject *event_base, *method_owner, *status_owner;
    Py_ssize_t ts_offset = member_offset(PyTuple_GET_ITEM(spec, 7), &event_base);
    Py_ssize_t method_offset = member_offset(PyTuple_GET_ITEM(spec, 8), &method_owner);
    Py_ssize_t status_offset = member_offset(PyTuple_GET_ITEM(spec, 9), &status_owner);
    if (ts_offset < 0 || method_offset < 0 || status_offset < 0) {
        return NULL;
    }
    /* Every slot read below is checked here: the types have the slots they are read at. */
    Py_ssize_t ntypes = PyTuple_GET_SIZE(types);
    PyTypeObject *classes[MAX_TYPES];
    Py_ssize_t counts[MAX_TYPES];
    char wants_index[MAX_TYPES]; /* is its handler told the event's index (spec.cursor)? */
    for (Py_ssize_t k = 0; k < ntypes; k++) {
        PyObject *cls = PyTuple_GET_ITEM(types, k);
        if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, event_base)) {
            PyErr_Format(PyExc_TypeError, "fold_run: %R is not an event type", cls);
            return NULL;
        }
        if (cls == api_type && (!PyType_IsSubtype((PyTypeObject *)cls, method_owner) ||
                                !PyType_IsSubtype((PyTypeObject *)cls, status_owner))) {
            PyErr_Format(PyExc_TypeError, "fold_run: %R has no method and status", cls);
            return NULL;
        }
        classes[k] = (PyTypeObject *)cls;
        counts[k] = 0;
        wants_index[k] = 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(indexed); j++) {
            if (PyTuple_GET_ITEM(indexed, j) == cls) {
                wants_index[k] = 1;
            }
        }
    }

    Py_INCREF(now);
    Py_ssize_t i = start < PyList_GET_SIZE(events) ? start : PyList_GET_SIZE(events);
    for (; i < PyList_GET_SIZE(events); i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        PyTypeObject *cls = Py_TYPE(event);
        Py_ssize_t k = 0;
        while (k < ntypes && classes[k] != cls) {
            k++;
        }
        if (k == ntypes) {
            PyErr_SetObject(PyExc_KeyError, (PyObject *)cls);
            goto error;
        }
        counts[k]++;
        Py_INCREF(event); /* a handler may drop the list's reference */
        PyObject *ts = SLOT(event, ts_offset);
        if (ts != NULL && ts != Py_None) {
            int newer = advances(now, ts);
            if (newer < 0) {
                Py_DECREF(event);
                goto error;
            }
            if (newer) {
                Py_INCREF(ts);
                Py_SETREF(now, ts);
            }
        }
        int rc = 0;
        if ((PyObject *)cls == bus_type) {
            /* counted above: that is its whole fold */
        } else if ((PyObject *)cls == api_type) {
            rc = bump_api(api, api_touched, SLOT(event, method_offset),
                          SLOT(event, status_offset), now);
            if (rc == 0) {
                rc = call(api_miss, event, now);
            }
        } else if ((PyObject *)cls == stop_type) {
            Py_DECREF(event);
            break;
        } else {
            PyObject *handler = PyTuple_GET_ITEM(handlers, k);
            if (handler != Py_None) {
                if (wants_index[k]) {
                    /* steals the new int, drops the old one; checks the list still has a slot */
                    PyObject *index = PyLong_FromSsize_t(i);
                    if (index == NULL || PyList_SetItem(cursor, 0, index) < 0) {
                        Py_DECREF(event);
                        goto error;
                    }
                }
                rc = call(handler, event, now);
            }
        }
        Py_DECREF(event);
        if (rc < 0) {
            goto error;
        }
    }
    PyObject *tally = PyTuple_New(ntypes);
    if (tally == NULL) {
        goto error;
    }
    for (Py_ssize_t k = 0; k < ntypes; k++) {
        PyObject *n = PyLong_FromSsize_t(counts[k]);
        if (n == NULL) {
            Py_DECREF(tally);
            goto error;
        }
        PyTuple_SET_ITEM(tally, k, n);
    }
    return Py_BuildValue("(NnN)", now, i, tally);

error:
    Py_DECREF(now);
    return NULL;
}

static PyMethodDef methods[] = {
    {"fold_run", (PyCFunction)(void (*)(void))fold_run, METH_FASTCALL,
     "fold_run(events, start, now, spec) -> (now, stop, counts): see projections.dispatch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "projections._dispatch",
    .m_doc = "The fold's hot loop, compiled (see projections.dispatch).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__dispatch(void) {
    one = PyLong_FromLong(1);
    infinity = PyFloat_FromDouble(Py_HUGE_VAL);
    if (one == NULL || infinity == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
