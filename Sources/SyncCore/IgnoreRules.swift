// TEMP stand-in until the real IgnoreRules lands (same API).
public struct IgnoreRules: Sendable {
    let names: [String]
    public init(parsing text: String) { names = text.split(separator: "\n").map { String($0).replacingSuffix() } }
    public static let empty = IgnoreRules(parsing: "")
    public func isIgnored(_ path: String, isDirectory: Bool) -> Bool {
        if path == ".syncd" || path.hasPrefix(".syncd/") { return true }
        let base = path.split(separator: "/").last.map(String.init) ?? path
        return names.contains { $0 == base || ($0.hasPrefix("*") && base.hasSuffix($0.dropFirst())) }
    }
}
private extension String { func replacingSuffix() -> String { hasSuffix("/") ? String(dropLast()) : self } }
