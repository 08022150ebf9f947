/// A version vector: one counter per device that ever changed the entry (Syncthing's model).
/// Devices are identified by the first 8 bytes of their device id (`ShortDeviceID`).
public typealias ShortDeviceID = UInt64

public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    public struct Counter: Hashable, Sendable {
        public var device: ShortDeviceID
        public var value: UInt64
        public init(device: ShortDeviceID, value: UInt64) { self.device = device; self.value = value }
    }

    /// Sorted by device, no zero values, no duplicates.
    public private(set) var counters: [Counter]

    public init() { counters = [] }

    public init(_ counters: [Counter]) {
        var merged: [ShortDeviceID: UInt64] = [:]
        for c in counters where c.value > 0 { merged[c.device] = max(merged[c.device] ?? 0, c.value) }
        self.counters = merged.map { Counter(device: $0.key, value: $0.value) }.sorted { $0.device < $1.device }
    }

    public enum Ordering: Sendable, Equatable { case equal, greater, lesser, concurrent }

    public func value(for device: ShortDeviceID) -> UInt64 {
        counters.first { $0.device == device }?.value ?? 0
    }

    /// The vector after `device` made a change: its counter becomes max(own + 1, `now`) so that a
    /// device that lost its state cannot reissue old counters (Syncthing uses a clock the same way).
    public func incremented(by device: ShortDeviceID, now: UInt64 = 0) -> VersionVector {
        var copy = self
        if let i = copy.counters.firstIndex(where: { $0.device == device }) {
            copy.counters[i].value = max(copy.counters[i].value + 1, now)
        } else {
            copy.counters.append(Counter(device: device, value: max(1, now)))
            copy.counters.sort { $0.device < $1.device }
        }
        return copy
    }

    public func merged(with other: VersionVector) -> VersionVector {
        VersionVector(counters + other.counters)
    }

    public func compare(_ other: VersionVector) -> Ordering {
        var greater = false, lesser = false
        var i = 0, j = 0
        let a = counters, b = other.counters
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i].device < b[j].device) {
                greater = true; i += 1
            } else if i == a.count || b[j].device < a[i].device {
                lesser = true; j += 1
            } else {
                if a[i].value > b[j].value { greater = true } else if a[i].value < b[j].value { lesser = true }
                i += 1; j += 1
            }
        }
        switch (greater, lesser) {
        case (false, false): return .equal
        case (true, false): return .greater
        case (false, true): return .lesser
        case (true, true): return .concurrent
        }
    }

    public var description: String {
        "{" + counters.map { "\(String($0.device, radix: 16)):\($0.value)" }.joined(separator: ",") + "}"
    }

    /// 16 bytes per counter: device u64 BE, value u64 BE.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(counters.count * 16)
        for c in counters {
            withUnsafeBytes(of: c.device.bigEndian) { out.append(contentsOf: $0) }
            withUnsafeBytes(of: c.value.bigEndian) { out.append(contentsOf: $0) }
        }
        return out
    }

    public init?(encoded bytes: [UInt8]) {
        guard bytes.count % 16 == 0 else { return nil }
        var list: [Counter] = []
        bytes.withUnsafeBytes { b in
            var at = 0
            while at < b.count {
                let d = UInt64(bigEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
                let v = UInt64(bigEndian: b.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self))
                list.append(Counter(device: d, value: v))
                at += 16
            }
        }
        self.init(list)
    }
}
