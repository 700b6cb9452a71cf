/* dcxsec._recvbuf: a socket's recv() answered in C from plaintext already
 * decrypted.
 *
 * pynetdicom reads each PDU as recv(6) and then recv(4096) calls, five or
 * more per PDU.  A recv() written in Python costs a microsecond or more per
 * call before it copies a byte; this one is a builtin method that slices
 * the buffer, and calls back into Python only when the buffer is empty.
 *
 * It knows nothing of TLS: the engine decrypts into `storage` (a bytearray
 * this object owns, so a close() in another thread frees nothing it reads),
 * and the Python side says how much it filled.  Every call holds the GIL;
 * the Python side fills only while the buffer is empty, so a fast-path read
 * never sees a half-written buffer.  Storage is made when first asked for,
 * and let go once read when the filler says no more data waits: an idle
 * connection keeps none.
 *
 * On the limited API, one build (abi3) serves every CPython from 3.11, the
 * first whose limited API has Py_buffer (take_into()); 3.9 and 3.10 build it
 * on their full API, for their own version only (setup.py). */
#define PY_SSIZE_T_CLEAN
#include <patchlevel.h>
#if PY_VERSION_HEX >= 0x030B0000
#define Py_LIMITED_API 0x030B0000
#endif
#include <Python.h>
#include <string.h> /* the limited API's Python.h leaves it out */

#ifndef Py_TPFLAGS_IMMUTABLETYPE /* CPython 3.9: no such flag, every heap type mutable */
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

typedef struct {
    PyObject_HEAD
    PyObject *storage;      /* bytearray of `capacity` bytes, or NULL until needed */
    Py_ssize_t capacity;
    Py_ssize_t pos;         /* storage[pos:end] is unread */
    Py_ssize_t end;
    int release_when_read;  /* let storage go once pos reaches end */
    PyObject *refill;       /* refill(*recv_args): the full recv(), when nothing is buffered */
} RecvBuffer;

/* Storage that buffers gave back, for the next one that needs that size.
 * A busy connection catches up after nearly every fill, and storage handed
 * back to malloc came back as fresh pages whenever the heap had been trimmed
 * meanwhile.  A few slots for the whole process (the GIL guards them), so
 * idle connections still keep nothing of their own.  A new owner reads only
 * what its own fills wrote; the old bytes are not cleared, as they are not
 * in memory handed back to malloc either. */
#define SHELF_SLOTS 4
static PyObject *shelf[SHELF_SLOTS];
static int without_shelf; /* DCXSEC_WITHOUT names "shelf": set by use_shelf() */

static PyObject *storage_take(Py_ssize_t size)
{
    for (int i = 0; !without_shelf && i < SHELF_SLOTS; i++) {
        PyObject *storage = shelf[i];
        if (storage && PyByteArray_Size(storage) == size) {
            shelf[i] = NULL;
            return storage;
        }
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

/* Let *slot's storage go: onto the shelf if nothing else holds it, in an
 * empty slot or in place of a smaller storage (a busy connection's is the
 * one worth keeping). */
static void storage_give(PyObject **slot)
{
    PyObject *storage = *slot;
    if (!storage)
        return;
    *slot = NULL;
    if (Py_REFCNT(storage) == 1 && !without_shelf) {
        int k = 0;
        for (int i = 0; shelf[k] && i < SHELF_SLOTS; i++)
            if (!shelf[i] || PyByteArray_Size(shelf[i]) < PyByteArray_Size(shelf[k]))
                k = i;
        if (!shelf[k] || PyByteArray_Size(shelf[k]) < PyByteArray_Size(storage)) {
            PyObject *smaller = shelf[k];
            shelf[k] = storage;
            storage = smaller;
        }
    }
    Py_XDECREF(storage);
}

/* Everything is set here, so no method ever meets a half-made object. */
static PyObject *RecvBuffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", "refill", NULL};
    Py_ssize_t size;
    PyObject *refill;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nO:RecvBuffer", kwlist, &size, &refill))
        return NULL;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return NULL;
    }
    if (!PyCallable_Check(refill)) {
        PyErr_SetString(PyExc_TypeError, "refill must be callable");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    RecvBuffer *self = (RecvBuffer *)alloc(type, 0);
    if (!self)
        return NULL;
    self->capacity = size;
    Py_INCREF(refill);
    self->refill = refill;
    return (PyObject *)self;
}

static int RecvBuffer_traverse(RecvBuffer *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE((PyObject *)self)); /* a heap type: each instance holds a reference to it */
    Py_VISIT(self->refill);
    return 0;
}

static int RecvBuffer_clear(RecvBuffer *self)
{
    Py_CLEAR(self->refill);
    return 0;
}

static void RecvBuffer_dealloc(RecvBuffer *self)
{
    PyTypeObject *type = Py_TYPE((PyObject *)self);
    PyObject_GC_UnTrack(self);
    RecvBuffer_clear(self);
    storage_give(&self->storage);
    ((freefunc)PyType_GetSlot(type, Py_tp_free))(self);
    Py_DECREF(type); /* the reference the instance held */
}

/* All read: start again at 0, and give storage back if asked to. */
static void after_read(RecvBuffer *self)
{
    if (self->pos < self->end)
        return;
    self->pos = self->end = 0;
    if (self->release_when_read)
        storage_give(&self->storage);
}

/* Up to n unread bytes as a new bytes object; the caller checked pos < end. */
static PyObject *take(RecvBuffer *self, Py_ssize_t n)
{
    Py_ssize_t have = self->end - self->pos;
    if (n > have)
        n = have;
    PyObject *out = PyBytes_FromStringAndSize(PyByteArray_AsString(self->storage) + self->pos, n);
    if (out) {
        self->pos += n;
        after_read(self);
    }
    return out;
}

/* refill(*args) through a tuple: PyObject_Vectorcall is limited only from
 * 3.12, and this is the slow path, taken once per fill. */
static PyObject *call_refill(PyObject *refill, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *tuple = PyTuple_New(nargs);
    if (!tuple)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(tuple, i, args[i]); /* cannot fail: a new tuple, i in range */
    }
    PyObject *out = PyObject_CallObject(refill, tuple);
    Py_DECREF(tuple);
    return out;
}

/* recv(buflen=1024, flags=0): buffered bytes if any, else refill(*args). */
static PyObject *RecvBuffer_recv(RecvBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->pos < self->end && nargs == 1 && PyLong_CheckExact(args[0])) {
        Py_ssize_t n = PyLong_AsSsize_t(args[0]);
        if (n > 0)
            return take(self, n);
        PyErr_Clear(); /* out of range or not positive: the full recv() says why */
    }
    if (!self->refill) /* only after the garbage collector broke a cycle through it */
        return PyErr_Format(PyExc_OSError, "the receive buffer is released");
    return call_refill(self->refill, args, nargs);
}

/* filled(n, release_when_read): the engine wrote n more bytes at storage[end:]. */
static PyObject *RecvBuffer_filled(RecvBuffer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "filled() takes 2 arguments (%zd given)", nargs);
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    int release = PyObject_IsTrue(args[1]);
    if (release < 0)
        return NULL;
    /* Only end moves here, and only pos in a read, so a read in between
     * cannot misplace the new bytes. */
    if (!self->storage || n < 0 || n > PyByteArray_Size(self->storage) - self->end)
        return PyErr_Format(PyExc_ValueError, "filled beyond the storage");
    self->end += n;
    self->release_when_read = release;
    after_read(self);
    Py_RETURN_NONE;
}

/* take(n): up to n unread bytes, b"" when none. */
static PyObject *RecvBuffer_take(RecvBuffer *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n <= 0 || self->pos >= self->end)
        return PyBytes_FromStringAndSize(NULL, 0);
    return take(self, n);
}

/* take_into(buffer): copy unread bytes into a writable buffer; returns the count. */
static PyObject *RecvBuffer_take_into(RecvBuffer *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t n = self->end - self->pos;
    if (n > view.len)
        n = view.len;
    if (n > 0) {
        memcpy(view.buf, PyByteArray_AsString(self->storage) + self->pos, (size_t)n);
        self->pos += n;
        after_read(self);
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

/* resize(size): storage of that size from now on, unread bytes kept at its start. */
static PyObject *RecvBuffer_resize(RecvBuffer *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t unread = self->end - self->pos;
    if (size <= 0 || size < unread)
        return PyErr_Format(PyExc_ValueError, "resize needs room for the unread bytes");
    self->capacity = size;
    if (!self->storage)
        Py_RETURN_NONE; /* made at that size when next needed */
    PyObject *storage = storage_take(size);
    if (!storage)
        return NULL;
    memcpy(PyByteArray_AsString(storage), PyByteArray_AsString(self->storage) + self->pos,
           (size_t)unread);
    storage_give(&self->storage);
    self->storage = storage;
    self->pos = 0;
    self->end = unread;
    Py_RETURN_NONE;
}

static PyObject *RecvBuffer_discard(RecvBuffer *self, PyObject *unused)
{
    self->pos = self->end = 0;
    Py_RETURN_NONE;
}

/* The bytearray the engine writes into, made at `size` bytes if there is none. */
static PyObject *RecvBuffer_storage(RecvBuffer *self, void *closure)
{
    if (!self->storage && !(self->storage = storage_take(self->capacity)))
        return NULL;
    Py_INCREF(self->storage);
    return self->storage;
}

static PyObject *RecvBuffer_unread(RecvBuffer *self, void *closure)
{
    return PyLong_FromSsize_t(self->end - self->pos);
}

static PyObject *RecvBuffer_size(RecvBuffer *self, void *closure)
{
    return PyLong_FromSsize_t(self->capacity);
}

static PyObject *RecvBuffer_end(RecvBuffer *self, void *closure)
{
    return PyLong_FromSsize_t(self->end);
}

static PyObject *RecvBuffer_held(RecvBuffer *self, void *closure)
{
    return PyBool_FromLong(self->storage != NULL);
}

static PyMethodDef RecvBuffer_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))RecvBuffer_recv, METH_FASTCALL,
     "recv(buflen=1024, flags=0): buffered bytes, or refill(*args) when none."},
    {"filled", (PyCFunction)(void (*)(void))RecvBuffer_filled, METH_FASTCALL,
     "filled(n, release_when_read): the engine wrote n more bytes at storage[end:]; "
     "let storage go once they are read if release_when_read."},
    {"take", (PyCFunction)RecvBuffer_take, METH_O, "take(n): up to n unread bytes."},
    {"take_into", (PyCFunction)RecvBuffer_take_into, METH_O,
     "take_into(buffer): copy unread bytes into buffer; returns the count."},
    {"resize", (PyCFunction)RecvBuffer_resize, METH_O,
     "resize(size): storage of that size from now on, unread bytes kept."},
    {"discard", (PyCFunction)RecvBuffer_discard, METH_NOARGS,
     "discard(): drop unread bytes; the next fill writes at the start."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef RecvBuffer_getset[] = {
    {"storage", (getter)RecvBuffer_storage, NULL, "the bytearray the engine decrypts into", NULL},
    {"unread", (getter)RecvBuffer_unread, NULL, "bytes buffered and not yet read", NULL},
    {"size", (getter)RecvBuffer_size, NULL, "size of the storage", NULL},
    {"end", (getter)RecvBuffer_end, NULL, "where the engine writes next", NULL},
    {"held", (getter)RecvBuffer_held, NULL, "whether storage is allocated now", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* A heap type made from slots (the limited API has no static PyTypeObject);
 * immutable, as a static type is. */
static PyType_Slot RecvBuffer_slots[] = {
    {Py_tp_doc, (void *)"RecvBuffer(size, refill): decrypted bytes served by a C recv()."},
    {Py_tp_new, RecvBuffer_new},
    {Py_tp_dealloc, RecvBuffer_dealloc},
    {Py_tp_traverse, RecvBuffer_traverse},
    {Py_tp_clear, RecvBuffer_clear},
    {Py_tp_methods, RecvBuffer_methods},
    {Py_tp_getset, RecvBuffer_getset},
    {0, NULL},
};

static PyType_Spec RecvBuffer_spec = {
    .name = "dcxsec._recvbuf.RecvBuffer",
    .basicsize = sizeof(RecvBuffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = RecvBuffer_slots,
};

/* shelved(): sizes of the storage on the shelf, for tests and diagnostics. */
static PyObject *recvbuf_shelved(PyObject *module, PyObject *unused)
{
    PyObject *sizes = PyList_New(0);
    for (int i = 0; sizes && i < SHELF_SLOTS; i++) {
        if (!shelf[i])
            continue;
        PyObject *size = PyLong_FromSsize_t(PyByteArray_Size(shelf[i]));
        if (!size || PyList_Append(sizes, size) < 0)
            Py_CLEAR(sizes);
        Py_XDECREF(size);
    }
    return sizes;
}

/* use_shelf(flag): DCXSEC_WITHOUT=shelf turns it off (dcxsec/_without.py). */
static PyObject *recvbuf_use_shelf(PyObject *mod, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    without_shelf = !on;
    Py_RETURN_NONE;
}

static PyMethodDef recvbuf_functions[] = {
    {"use_shelf", recvbuf_use_shelf, METH_O,
     "use_shelf(flag): whether storage let go waits on the shelf (DCXSEC_WITHOUT=shelf: no)."},
    {"shelved", recvbuf_shelved, METH_NOARGS,
     "shelved(): sizes of the storage kept for the next buffer that needs it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef recvbuf_module = {
    PyModuleDef_HEAD_INIT, "dcxsec._recvbuf",
    "A socket's recv() answered in C from decrypted plaintext.", -1, recvbuf_functions,
};

PyMODINIT_FUNC PyInit__recvbuf(void)
{
    PyObject *m = PyModule_Create(&recvbuf_module);
    if (!m)
        return NULL;
    PyObject *type = PyType_FromSpec(&RecvBuffer_spec);
    if (!type || PyModule_AddObject(m, "RecvBuffer", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
