// libuv's thread pool runs every fsync, LevelDB read and write, file read and scrypt hash of the process. Its
// default of 4 threads is too few for a boot storm: the store's group-commit fsyncs wait on the disk, not the
// CPU, and while four of them wait every LevelDB read and TFTP file read queues behind them. A waiting thread
// costs no CPU, so metalbox asks for 16 unless the environment names a size. The pool is made on first use:
// this module must be the entry point's first import (its body then runs before any other module's). That holds
// in the binary (test/integration/binary.test.ts counts the threads); run from source under tsx, the module
// loader has read files through the pool before any of our code runs, so there UV_THREADPOOL_SIZE must be set
// outside (the storm bench does).
const POOL_THREADS = '16';

if (process.env.UV_THREADPOOL_SIZE === undefined || process.env.UV_THREADPOOL_SIZE === '') process.env.UV_THREADPOOL_SIZE = POOL_THREADS;
