import ArgumentParser
import SyncSecurity

struct SecretCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret",
        abstract: "Print a new read-write secret, or derive the read-only or storage secret of one.")

    @Option(name: .customLong("read-only"), help: "Print the read-only secret derived from this read-write secret.")
    var readOnly: String?

    @Option(help: "Print the storage secret derived from this read-write or read-only secret.")
    var storage: String?

    func validate() throws {
        if readOnly != nil && storage != nil { throw ValidationError("give either --read-only or --storage, not both") }
    }

    func run() throws {
        do {
            if let text = readOnly {
                let secret = try FolderSecret(parsing: text)
                guard secret.kind == .readWrite else {
                    throw CLIError("--read-only takes a read-write secret; this one is \(secret.kind.rawValue)")
                }
                print(try secret.readOnly().text)
            } else if let text = storage {
                print(try FolderSecret(parsing: text).storage().text)
            } else {
                print(FolderSecret.generate().text)
            }
        } catch let error as SecretError {
            throw CLIError("invalid secret: \(error)")
        }
    }
}
