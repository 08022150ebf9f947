import Foundation
import Logging

/// `--log-format`: text lines (swift-log's `StreamLogHandler`) or one JSON object per line.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// One JSON object per line on a stream (stderr by default), for log collectors:
/// `{"time":"2026-12-01T06:14:47.123Z","level":"info","label":"syncd","message":"…","metadata":{…}}`.
/// The time is UTC, ISO 8601 with milliseconds; `metadata` is left out when empty; keys are in
/// that order, every string escaped as JSON requires, so each line parses on its own.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void
    private let now: @Sendable () -> Date

    /// `write` gets each line, newline included; `now` is the clock (injected in tests).
    public init(label: String, now: @escaping @Sendable () -> Date = Date.init,
                write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.now = now
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        var line = "{\"time\":\"\(Self.timestamp(now()))\",\"level\":\"\(event.level.rawValue)\",\"label\":"
        line += Self.quoted(label) + ",\"message\":" + Self.quoted(event.message.description)
        if !merged.isEmpty { line += ",\"metadata\":" + Self.object(merged) }
        line += "}\n"
        write(line)
    }

    /// `2026-12-01T06:14:47.123Z`.
    public static func timestamp(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(ms / 1000 - (ms % 1000 < 0 ? 1 : 0))
        let millis = (ms % 1000 + 1000) % 1000
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int = 2) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T"
            + "\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec)).\(pad(Int32(millis), 3))Z"
    }

    static func object(_ metadata: Logger.Metadata) -> String {
        "{" + metadata.sorted { $0.key < $1.key }.map { quoted($0.key) + ":" + value($0.value) }.joined(separator: ",") + "}"
    }

    static func value(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): quoted(s)
        case .stringConvertible(let c): quoted(c.description)
        case .array(let items): "[" + items.map(Self.value).joined(separator: ",") + "]"
        case .dictionary(let d): object(d)
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped; the rest as UTF-8.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Writes the whole line with one write(2), so lines of concurrent loggers never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        var bytes = Array(line.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Foundation.write(2, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            done += n
        }
    }
}

/// The daemon's log level, changed at run time by a reload (SIGHUP): every handler made by
/// `LogLevelControl.handler` reads it at each log call.
public final class LogLevelControl: Sendable {
    private let lock = NSLock()
    nonisolated(unsafe) private var current: Logger.Level

    public init(_ level: Logger.Level) { current = level }

    public var level: Logger.Level {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }

    /// A handler in `format` whose level is this control's.
    public func handler(label: String, format: LogFormat) -> any LogHandler {
        switch format {
        case .text:
            var inner = StreamLogHandler.standardError(label: label)
            inner.logLevel = .trace
            return ControlledLevelHandler(inner: inner, control: self)
        case .json:
            var inner = JSONLogHandler(label: label)
            inner.logLevel = .trace
            return ControlledLevelHandler(inner: inner, control: self)
        }
    }
}

/// Forwards to `inner`, filtered by the shared `LogLevelControl` rather than a level of its own.
struct ControlledLevelHandler: LogHandler {
    var inner: any LogHandler
    let control: LogLevelControl

    var logLevel: Logger.Level {
        get { control.level }
        set { control.level = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) { inner.log(event: event) }
}
