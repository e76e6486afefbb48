// qkd_mpi: the N-API binding to MPI that data-parallel training uses
// (src/parallel/mpi.ts types it; docs/parallel.md explains the design).
// Like native/binding.cc it only marshals: checks arguments, calls MPI on
// the caller's TypedArrays in place, and turns MPI errors into JS errors.
//
// Exports:
//   init(threadLevel 0..3): { rank, size, provided, library }
//       MPI_Init_thread at MPI_THREAD_SINGLE/FUNNELED/SERIALIZED/MULTIPLE;
//       errors on MPI_COMM_WORLD return (they become JS errors) instead of
//       aborting inside MPI.
//   allreduce(values: Float32Array | Float64Array, op 0 sum | 1 max | 2 min
//             [, chunk]) in place on every rank, in calls of at most `chunk`
//       elements (default and maximum 2^30: MPI counts are C ints). The
//       argument exists so tests can check the chunking on small arrays.
//   broadcast(values: any TypedArray, root): the root's bytes on every rank.
//   gather(send: Uint8Array, receive: Uint8Array, root): every rank's send
//       bytes (the same count on each) into the root's receive, in rank
//       order (receive.length = size × send.length on the root; ignored
//       elsewhere, pass an empty array).
//   barrier(); abort(code) (does not return); finalize(); wtime(): seconds.
//
// Open MPI loads its components (plugins) with dlopen, and they resolve
// symbols of libmpi itself. Node loads this addon — and with it libmpi —
// with RTLD_LOCAL, where the plugins cannot see those symbols and MPI_Init
// fails. So init first re-opens libmpi with RTLD_GLOBAL (RTLD_NOLOAD: the
// library already mapped is promoted, nothing new is loaded).
#include <mpi.h>
#include <node_api.h>

#include <dlfcn.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

bool g_initialized = false;

napi_value throwError(napi_env env, const char* fn, const std::string& message) {
  std::string text = std::string("qkd_mpi.") + fn + ": " + message;
  napi_throw_error(env, nullptr, text.c_str());
  return nullptr;
}

std::string mpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

bool getArgs(napi_env env, napi_callback_info info, size_t expected, napi_value* argv, const char* fn) {
  size_t argc = expected;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < expected) {
    throwError(env, fn, "expected " + std::to_string(expected) + " argument(s)");
    return false;
  }
  return true;
}

bool getInt(napi_env env, napi_value v, const char* fn, const char* name, int lo, int hi, int* out) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != static_cast<double>(static_cast<int64_t>(d)) || d < lo || d > hi) {
    throwError(env, fn, std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return false;
  }
  *out = static_cast<int>(d);
  return true;
}

bool requireInit(napi_env env, const char* fn) {
  if (g_initialized) return true;
  throwError(env, fn, "MPI is not initialised (call init first)");
  return false;
}

// A typed array's data pointer, element type and length.
struct Typed {
  void* data = nullptr;
  napi_typedarray_type type = napi_uint8_array;
  size_t length = 0;
  size_t elementBytes = 1;
};

bool getTyped(napi_env env, napi_value v, const char* fn, const char* name, Typed* out) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) {
    throwError(env, fn, std::string(name) + " must be a TypedArray");
    return false;
  }
  napi_value buffer;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &out->type, &out->length, &out->data, &buffer, &offset) != napi_ok) {
    throwError(env, fn, std::string("cannot read ") + name);
    return false;
  }
  switch (out->type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: out->elementBytes = 1; break;
    case napi_int16_array: case napi_uint16_array: out->elementBytes = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: out->elementBytes = 4; break;
    default: out->elementBytes = 8; break;
  }
  return true;
}

bool checkMpi(napi_env env, const char* fn, int code) {
  if (code == MPI_SUCCESS) return true;
  throwError(env, fn, mpiErrorText(code));
  return false;
}

// Promotes the already-loaded libmpi to RTLD_GLOBAL (see the header comment).
void exposeLibmpiSymbols() {
  Dl_info where;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &where) != 0 && where.dli_fname != nullptr) {
    if (dlopen(where.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) != nullptr) return;
  }
  // Fallback: the usual sonames of Open MPI and MPICH.
  for (const char* name : {"libmpi.so.40", "libmpi.so.12", "libmpi.so"}) {
    if (dlopen(name, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) != nullptr) return;
  }
}

napi_value setNamed(napi_env env, napi_value obj, const char* key, napi_value value) {
  napi_set_named_property(env, obj, key, value);
  return obj;
}

napi_value Init(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv, "init")) return nullptr;
  int level = 0;
  if (!getInt(env, argv[0], "init", "threadLevel", 0, 3, &level)) return nullptr;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return throwError(env, "init", "MPI was already finalised in this process");
  int provided = 0;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    exposeLibmpiSymbols();
    static const int levels[] = {MPI_THREAD_SINGLE, MPI_THREAD_FUNNELED, MPI_THREAD_SERIALIZED, MPI_THREAD_MULTIPLE};
    if (!checkMpi(env, "init", MPI_Init_thread(nullptr, nullptr, levels[level], &provided))) return nullptr;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  } else {
    MPI_Query_thread(&provided);
  }
  g_initialized = true;
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int providedLevel = provided == MPI_THREAD_MULTIPLE ? 3 : provided == MPI_THREAD_SERIALIZED ? 2 : provided == MPI_THREAD_FUNNELED ? 1 : 0;
  char library[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(library, &length);
  std::string firstLine(library, static_cast<size_t>(length));
  size_t newline = firstLine.find_first_of("\r\n,");
  if (newline != std::string::npos) firstLine.resize(newline);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, rank, &v);
  setNamed(env, out, "rank", v);
  napi_create_int32(env, size, &v);
  setNamed(env, out, "size", v);
  napi_create_int32(env, providedLevel, &v);
  setNamed(env, out, "provided", v);
  napi_create_string_utf8(env, firstLine.c_str(), firstLine.size(), &v);
  setNamed(env, out, "library", v);
  return out;
}

// Elements per MPI call: counts are C ints, so larger arrays go in chunks.
constexpr size_t kChunk = size_t(1) << 30;

napi_value Allreduce(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 2) return throwError(env, "allreduce", "expected 2 or 3 arguments");
  if (!requireInit(env, "allreduce")) return nullptr;
  Typed t;
  if (!getTyped(env, argv[0], "allreduce", "values", &t)) return nullptr;
  MPI_Datatype type;
  if (t.type == napi_float32_array) type = MPI_FLOAT;
  else if (t.type == napi_float64_array) type = MPI_DOUBLE;
  else return throwError(env, "allreduce", "values must be a Float32Array or a Float64Array");
  int op = 0;
  if (!getInt(env, argv[1], "allreduce", "op", 0, 2, &op)) return nullptr;
  MPI_Op mpiOp = op == 0 ? MPI_SUM : op == 1 ? MPI_MAX : MPI_MIN;
  int chunkArg = static_cast<int>(kChunk);
  napi_valuetype chunkType = napi_undefined;
  if (argc > 2) napi_typeof(env, argv[2], &chunkType);
  if (chunkType != napi_undefined && !getInt(env, argv[2], "allreduce", "chunk", 1, static_cast<int>(kChunk), &chunkArg)) return nullptr;
  const size_t chunk = static_cast<size_t>(chunkArg);
  char* base = static_cast<char*>(t.data);
  for (size_t done = 0; done < t.length; done += chunk) {
    size_t n = t.length - done < chunk ? t.length - done : chunk;
    if (!checkMpi(env, "allreduce", MPI_Allreduce(MPI_IN_PLACE, base + done * t.elementBytes, static_cast<int>(n), type, mpiOp, MPI_COMM_WORLD))) return nullptr;
  }
  return nullptr;
}

napi_value Broadcast(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!getArgs(env, info, 2, argv, "broadcast") || !requireInit(env, "broadcast")) return nullptr;
  Typed t;
  if (!getTyped(env, argv[0], "broadcast", "values", &t)) return nullptr;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int root = 0;
  if (!getInt(env, argv[1], "broadcast", "root", 0, size - 1, &root)) return nullptr;
  size_t bytes = t.length * t.elementBytes;
  char* base = static_cast<char*>(t.data);
  for (size_t done = 0; done < bytes; done += kChunk) {
    size_t n = bytes - done < kChunk ? bytes - done : kChunk;
    if (!checkMpi(env, "broadcast", MPI_Bcast(base + done, static_cast<int>(n), MPI_BYTE, root, MPI_COMM_WORLD))) return nullptr;
  }
  return nullptr;
}

napi_value Gather(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!getArgs(env, info, 3, argv, "gather") || !requireInit(env, "gather")) return nullptr;
  Typed send, receive;
  if (!getTyped(env, argv[0], "gather", "send", &send) || !getTyped(env, argv[1], "gather", "receive", &receive)) return nullptr;
  if (send.type != napi_uint8_array || receive.type != napi_uint8_array) return throwError(env, "gather", "send and receive must be Uint8Arrays");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int root = 0;
  if (!getInt(env, argv[2], "gather", "root", 0, size - 1, &root)) return nullptr;
  if (send.length > static_cast<size_t>(INT_MAX)) return throwError(env, "gather", "send holds more than 2^31 - 1 bytes");
  if (rank == root && receive.length != send.length * static_cast<size_t>(size)) {
    return throwError(env, "gather", "receive must hold size x send.length = " + std::to_string(send.length * static_cast<size_t>(size)) + " bytes on the root, not " + std::to_string(receive.length));
  }
  int n = static_cast<int>(send.length);
  checkMpi(env, "gather", MPI_Gather(send.data, n, MPI_BYTE, rank == root ? receive.data : nullptr, n, MPI_BYTE, root, MPI_COMM_WORLD));
  return nullptr;
}

napi_value Barrier(napi_env env, napi_callback_info info) {
  if (!requireInit(env, "barrier")) return nullptr;
  checkMpi(env, "barrier", MPI_Barrier(MPI_COMM_WORLD));
  return nullptr;
}

napi_value Abort(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv, "abort") || !requireInit(env, "abort")) return nullptr;
  int code = 1;
  if (!getInt(env, argv[0], "abort", "code", 0, 255, &code)) return nullptr;
  fflush(stdout);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  return nullptr;
}

napi_value Finalize(napi_env env, napi_callback_info info) {
  if (!g_initialized) return nullptr;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) checkMpi(env, "finalize", MPI_Finalize());
  g_initialized = false;
  return nullptr;
}

napi_value Wtime(napi_env env, napi_callback_info info) {
  napi_value out;
  napi_create_double(env, MPI_Wtime(), &out);
  return out;
}

}  // namespace

NAPI_MODULE_INIT() {
  const struct {
    const char* name;
    napi_callback fn;
  } exports_[] = {
      {"init", Init}, {"allreduce", Allreduce}, {"broadcast", Broadcast}, {"gather", Gather}, {"barrier", Barrier},
      {"abort", Abort}, {"finalize", Finalize}, {"wtime", Wtime},
  };
  for (const auto& e : exports_) {
    napi_value fn;
    napi_create_function(env, e.name, NAPI_AUTO_LENGTH, e.fn, nullptr, &fn);
    napi_set_named_property(env, exports, e.name, fn);
  }
  return exports;
}
