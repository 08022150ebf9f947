#if canImport(Glibc)
import Glibc
#endif

/// A small pthread mutex; SyncFS avoids Foundation's locks to stay lean.
public final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A flag one thread raises and others check (say, "stop").
public final class Flag: @unchecked Sendable {
    private let lock = Lock()
    private var value = false

    public init() {}
    public func raise() { lock.withLock { value = true } }
    public var isRaised: Bool { lock.withLock { value } }
}
