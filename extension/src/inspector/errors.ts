// One error type whose message is shown to the user as is: it names the file at fault.
export class InspectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InspectorError';
  }
}
