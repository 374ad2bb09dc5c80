// libuv's thread pool runs every fsync, LevelDB read and write, file read and scrypt hash of the process. Its
// default of 4 threads is too few for a boot storm: the store's group-commit fsyncs wait on the disk, not the
// CPU, and while four of them wait every LevelDB read and TFTP file read queues behind them. A waiting thread
// costs no CPU, so metalbox asks for 16 unless the environment names a size. The pool is made on first use:
// this module must be the entry point's first import (its body then runs before any other module's).
const POOL_THREADS = '16';

if (process.env.UV_THREADPOOL_SIZE === undefined || process.env.UV_THREADPOOL_SIZE === '') process.env.UV_THREADPOOL_SIZE = POOL_THREADS;
