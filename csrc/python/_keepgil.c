/* dcxsec._keepgil: engine calls made without letting go of the GIL.
 *
 * cffi and the socket module give up the GIL around every call, and another
 * thread may take it and keep it for as long as Python lets it.  A
 * connection's last steps (close_notify, the TCP shutdown, close, and
 * freeing the engine's state) cannot afford that hand-off: at an
 * association's release pynetdicom queues the A-RELEASE confirmation and
 * then closes the socket, and a requestor thread that takes the GIL in
 * between finds the state machine not yet idle and sleeps 10 ms in
 * Association.kill().
 *
 * None of these calls waits while it holds the GIL: each lets it go, or
 * falls back to the caller's waiting path, when it would.
 *
 * The engine is reached through the addresses its cffi module hands over
 * once, in bind(); connections and the pump are passed as addresses too.
 * On Windows the close_notify and the free are SChannel calls made in the
 * process (no I/O but the socket's): they keep the GIL as well.
 *
 * On the limited API of CPython 3.9, so one build (abi3) serves every
 * CPython since. */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x03090000
#include <Python.h>

#include "dcxtls.h"
#include "dcxthreads.h"

#ifdef _WIN32
#include <winsock2.h>
typedef SOCKET fd_type;
#define CLOSE_SOCKET closesocket
#define LAST_ERROR() WSAGetLastError()
#define RESET_ERROR WSAECONNRESET
#else
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
typedef int fd_type;
#define CLOSE_SOCKET close
#define LAST_ERROR() errno
#define RESET_ERROR ECONNRESET
#endif

/* The engine lives in the cffi module, which cannot be linked against: its
 * functions come as addresses, called through these types. */
typedef int (*close_notify_now_fn)(dcx_conn *c, dcx_error *err);
typedef void (*claim_fn)(dcx_pump *p, dcx_conn *c);
typedef void (*free_fn)(dcx_conn *c);

static close_notify_now_fn close_notify_now_call;
static claim_fn claim_call;
static free_fn free_call;

/* An address from Python (an int, 0 for NULL) as a pointer. */
static int to_pointer(PyObject *o, void **out)
{
    *out = PyLong_AsVoidPtr(o);
    return !(*out == NULL && PyErr_Occurred());
}

static PyObject *raise_socket_error(int code)
{
#ifdef _WIN32
    return PyErr_SetExcFromWindowsErr(PyExc_OSError, code);
#else
    errno = code;
    return PyErr_SetFromErrno(PyExc_OSError);
#endif
}

static int bound(void)
{
    if (close_notify_now_call && claim_call && free_call)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "dcxsec._keepgil.bind() has not been called");
    return 0;
}

static PyObject *keepgil_bind(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"close_notify_now", "claim", "free", NULL};
    void *notify, *claim, *release;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&O&:bind", names, to_pointer, &notify,
                                     to_pointer, &claim, to_pointer, &release))
        return NULL;
    close_notify_now_call = (close_notify_now_fn)notify;
    claim_call = (claim_fn)claim;
    free_call = (free_fn)release;
    Py_RETURN_NONE;
}

/* close_notify_now(conn) -> status: the engine's DCX_OK, DCX_E_TIMEOUT when
 * the socket cannot take the record at once, or a socket error's status. */
static PyObject *keepgil_close_notify_now(PyObject *mod, PyObject *arg)
{
    void *conn;
    if (!to_pointer(arg, &conn) || !bound())
        return NULL;
    return PyLong_FromLong(close_notify_now_call((dcx_conn *)conn, NULL));
}

/* shutdown(sock, how): shutdown(2), which never waits.  The descriptor is
 * read here, so no other thread can close it (and have its number reused)
 * between the read and the call. */
static PyObject *keepgil_shutdown(PyObject *mod, PyObject *args)
{
    PyObject *sock, *fileno;
    int how;
    if (!PyArg_ParseTuple(args, "Oi:shutdown", &sock, &how))
        return NULL;
    if (!(fileno = PyObject_CallMethod(sock, "fileno", NULL)))
        return NULL;
    long long fd = PyLong_AsLongLong(fileno);
    Py_DECREF(fileno);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (shutdown((fd_type)fd, how) != 0)
        return raise_socket_error(LAST_ERROR());
    Py_RETURN_NONE;
}

/* close(fd): close(2), which can wait only under SO_LINGER: then, and only
 * then, the GIL is let go around it. */
static PyObject *keepgil_close(PyObject *mod, PyObject *args)
{
    long long fd;
    if (!PyArg_ParseTuple(args, "L:close", &fd))
        return NULL;
    struct linger linger = {0, 0};
#ifdef _WIN32
    int size = sizeof(linger);
#else
    socklen_t size = sizeof(linger);
#endif
    int lingers = getsockopt((fd_type)fd, SOL_SOCKET, SO_LINGER, (char *)&linger, &size) == 0 &&
                  linger.l_onoff;
    int rc, code = 0;
    if (lingers) {
        Py_BEGIN_ALLOW_THREADS
        rc = CLOSE_SOCKET((fd_type)fd);
        code = rc ? LAST_ERROR() : 0;
        Py_END_ALLOW_THREADS
    } else {
        rc = CLOSE_SOCKET((fd_type)fd);
        code = rc ? LAST_ERROR() : 0;
    }
    /* as socket.close(): a reset peer is no error at this point */
    if (rc != 0 && code != RESET_ERROR)
        return raise_socket_error(code);
    Py_RETURN_NONE;
}

/* free(conn, pump): the pump lets go of conn (waiting only for a handshake
 * step in progress, which never needs the GIL), then the engine frees it. */
static PyObject *keepgil_free(PyObject *mod, PyObject *args)
{
    void *conn, *pump;
    if (!PyArg_ParseTuple(args, "O&O&:free", to_pointer, &conn,
                          to_pointer, &pump) || !bound())
        return NULL;
    if (pump)
        claim_call((dcx_pump *)pump, (dcx_conn *)conn);
    free_call((dcx_conn *)conn);
    Py_RETURN_NONE;
}

static PyMethodDef keepgil_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))keepgil_bind, METH_VARARGS | METH_KEYWORDS,
     "bind(close_notify_now, claim, free): the engine functions' addresses."},
    {"close_notify_now", keepgil_close_notify_now, METH_O,
     "close_notify_now(conn): dcx_conn_close_notify_now(), GIL held."},
    {"shutdown", keepgil_shutdown, METH_VARARGS, "shutdown(sock, how): shutdown(2), GIL held."},
    {"close", keepgil_close, METH_VARARGS, "close(fd): close the socket, GIL held unless it lingers."},
    {"free", keepgil_free, METH_VARARGS,
     "free(conn, pump): dcx_pump_claim() when pump is not 0, then dcx_conn_free(), GIL held."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef keepgil_module = {
    PyModuleDef_HEAD_INIT, "dcxsec._keepgil",
    "Engine calls made without letting go of the GIL: a connection's close.",
    -1, keepgil_methods,
};

PyMODINIT_FUNC PyInit__keepgil(void)
{
    return PyModule_Create(&keepgil_module);
}
