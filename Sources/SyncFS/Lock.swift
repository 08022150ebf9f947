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

/// A value reached only under its lock, from any thread.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        try lock.withLock { try body(&value) }
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

/// A mutex with a condition, for a thread that waits until another makes a predicate true.
public final class WaitCondition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond); pthread_mutex_destroy(mutex)
        cond.deallocate(); mutex.deallocate()
    }

    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    public func broadcast() {
        pthread_mutex_lock(mutex); pthread_cond_broadcast(cond); pthread_mutex_unlock(mutex)
    }

    /// Waits until `done()` (evaluated under the lock) is true; false after `timeout` seconds.
    public func wait(timeout: Double, until done: () -> Bool) -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let total = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) + Int64(timeout * 1e9)
        var deadline = timespec(tv_sec: Int(total / 1_000_000_000), tv_nsec: Int(total % 1_000_000_000))
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !done() {
            if pthread_cond_timedwait(cond, mutex, &deadline) == ETIMEDOUT { return done() }
        }
        return true
    }
}

/// At most `count` holders at once (a window of requests, batches in flight); `acquire` waits for
/// a free slot. A condition variable rather than a `DispatchSemaphore`: libdispatch traps when a
/// semaphore is freed with fewer slots than it started with, which a holder abandoned by a
/// failed pull made happen (SIGILL in `_dispatch_semaphore_dispose`).
public final class Slots: @unchecked Sendable {
    private let condition = WaitCondition()
    private var free: Int

    public init(_ count: Int) { free = count }

    /// False when no slot came free within `timeout` seconds.
    public func acquire(timeout: Double = .infinity) -> Bool {
        while true {
            let got: Bool = condition.withLock {
                guard free > 0 else { return false }
                free -= 1
                return true
            }
            if got { return true }
            guard condition.wait(timeout: min(timeout, 3600), until: { free > 0 }) else { return false }
        }
    }

    public func release() {
        condition.withLock { free += 1 }
        condition.broadcast()
    }
}
