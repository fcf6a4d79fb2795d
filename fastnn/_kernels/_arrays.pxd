# The one argument convention of fastnn's compiled entry points: plain ndarrays, checked here.
#
# Every array a kernel reads or writes passes through one of these functions, which returns
# its data pointer only if it is an ndarray (a subclass is fine: what is read is the C struct
# of the array, never a Python ``.shape`` property that could say otherwise), of the dtype the
# call computes in, native byte order, aligned, C-contiguous, writable when it is an output,
# and of exactly the dimensions the kernel will walk.  Anything else raises ValueError or
# TypeError naming the argument, so no caller (a layer whose public cache attribute was
# reassigned, an ndarray subclass, a buggy wrapper) can steer a kernel out of its buffer.
# The checks read a few fields of each array (about 10 ns); typed memoryviews would check less
# and cost ten times as much on the book's small arrays.
cimport numpy as cnp


cdef inline str _describe(cnp.ndarray a):
    # the dimensions of the array itself (an ndarray subclass may say otherwise in .shape)
    cdef list dims = []
    cdef int i
    for i in range(cnp.PyArray_NDIM(a)):
        dims.append(a.shape[i])
    return f"{a.dtype} array of shape {tuple(dims)}"


cdef inline cnp.ndarray _plain(object a, str name, int typenum, bint out):
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name}: expected a native {cnp.PyArray_DescrFromType(typenum)} array, "
                        f"got a {_describe(arr)}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)):
        raise ValueError(f"{name}: expected a C-contiguous aligned array, got a strided "
                         f"{_describe(arr)}")
    if out and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: the output array is read-only")
    return arr


cdef inline void *flat_data(object a, str name, int typenum, cnp.npy_intp size,
                            bint out=False) except NULL:
    """Data of ``a``, which must hold exactly ``size`` elements (any number of dimensions)."""
    cdef cnp.ndarray arr = _plain(a, name, typenum, out)
    if cnp.PyArray_SIZE(arr) != size:
        raise ValueError(f"{name}: expected {size} elements, got a {_describe(arr)}")
    return cnp.PyArray_DATA(arr)


cdef inline void *data_2d(object a, str name, int typenum, cnp.npy_intp rows,
                          cnp.npy_intp cols, bint out=False) except NULL:
    """Data of ``a``, which must be 2-D of shape ``(rows, cols)``."""
    cdef cnp.ndarray arr = _plain(a, name, typenum, out)
    if cnp.PyArray_NDIM(arr) != 2 or arr.shape[0] != rows or arr.shape[1] != cols:
        raise ValueError(f"{name}: expected shape ({rows}, {cols}), got a {_describe(arr)}")
    return cnp.PyArray_DATA(arr)


cdef inline cnp.npy_intp dim(object a, str name, int ndim, int axis) except -1:
    """Dimension ``axis`` of ``a``, which must be an ndarray of ``ndim`` dimensions, read from
    the array itself."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got a {_describe(arr)}")
    return arr.shape[axis]


cdef inline int float_type(object a, str name) except -1:
    """NPY_FLOAT32 or NPY_FLOAT64, the dtype ``a`` (the argument that selects the code) has."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray> a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"{name}: expected float32 or float64, got {(<cnp.ndarray> a).dtype}")
    return typenum
