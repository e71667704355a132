/* at: 0x8000 */
/* multiboot.S linked at 0x8000, where the loader's information area used to
 * be: the loader must put the information and modules elsewhere. */
#include "multiboot.S"
